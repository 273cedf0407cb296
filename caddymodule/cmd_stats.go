package caddymodule

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/postbackedge/caddy-postback/report"
)

func init() {
	registerPostbackSubcommand(newStatsCommand)
}

// Exit statuses of `caddy postback stats`, for monitoring: 0 all well,
// 1 the statistics could not be read, 2 some destination has failed
// deliveries waiting for a retry (the Nagios convention's CRITICAL).
const (
	statsExitOK     = caddy.ExitCodeSuccess
	statsExitError  = caddy.ExitCodeFailedStartup
	statsExitFailed = 2
)

// statsOptions are the flags of `caddy postback stats`.
type statsOptions struct {
	address, config, adapter string
	json                     bool
}

func newStatsCommand() *cobra.Command {
	var o statsOptions
	cmd := &cobra.Command{
		Use:   "stats [--address <interface>] [--config <path> [--adapter <name>]] [--json]",
		Short: "Print delivery statistics per destination from the running Caddy",
		Long: `
Reads GET /postback/stats from the admin API of the running Caddy and prints
one line per destination: health, pending, delivered, failed and spooled
counts, the age of the oldest pending delivery, success rates over the last
hour and day, and the last success and error.

The admin address is --address if given, else the one in --config, else
Caddy's default (localhost:2019), as for "caddy reload" and "caddy stop".

--json prints the API's JSON unchanged, for scripts.

Exit status: 0 when no destination has failed deliveries, 2 when one has
(they wait for a retry: "caddy postback retry", the report page, or
POST /postback/deliveries/{id}/retry), 1 when the statistics could not be
read.`,
		Args: cobra.NoArgs,
		// An exit status for monitoring is no reason to print the usage.
		SilenceUsage: true,
	}
	// Caddy's WrapCommandFuncForCobra is what lets an exit status other
	// than 1 reach the process (caddycmd.Main exits with it).
	cmd.RunE = func(c *cobra.Command, args []string) error {
		return caddycmd.WrapCommandFuncForCobra(func(caddycmd.Flags) (int, error) {
			code, err := runStats(c.OutOrStdout(), o)
			if err == nil && code != statsExitOK {
				// The table already names the destination; cobra must not
				// add "Error: exiting with status 2".
				c.SilenceErrors = true
			}
			return code, err
		})(c, args)
	}
	fl := cmd.Flags()
	fl.StringVar(&o.address, "address", "", "the admin API address, if not the one in --config or the default")
	fl.StringVarP(&o.config, "config", "c", "", "configuration file to read the admin address from, if --address is not used")
	fl.StringVarP(&o.adapter, "adapter", "a", "", "name of the config adapter for --config")
	fl.BoolVar(&o.json, "json", false, "print the JSON of the admin API instead of a table")
	return cmd
}

// runStats fetches and prints the statistics; the int is the exit status.
func runStats(out io.Writer, o statsOptions) (int, error) {
	addr, err := caddycmd.DetermineAdminAPIAddress(o.address, nil, o.config, o.adapter)
	if err != nil {
		return statsExitError, fmt.Errorf("finding the admin API address: %w", err)
	}
	resp, err := caddycmd.AdminAPIRequest(addr, http.MethodGet, report.APIPrefix+"stats", nil, nil)
	if err != nil {
		return statsExitError, fmt.Errorf("reading statistics from the admin API at %s: %w", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return statsExitError, fmt.Errorf("reading statistics from the admin API at %s: %w", addr, err)
	}
	var st report.Stats
	if err := json.Unmarshal(body, &st); err != nil {
		return statsExitError, fmt.Errorf("admin API at %s: unexpected answer to %sstats: %w", addr, report.APIPrefix, err)
	}
	if o.json {
		_, err = out.Write(body)
	} else {
		err = writeStatsTable(out, st)
	}
	if err != nil {
		return statsExitError, fmt.Errorf("writing statistics: %w", err)
	}
	if st.Totals.Failed > 0 {
		return statsExitFailed, nil
	}
	return statsExitOK, nil
}

// writeStatsTable prints one line per destination and one for the totals:
// names left-aligned, figures right-aligned.
func writeStatsTable(out io.Writer, st report.Stats) error {
	header := []string{"DIN", "HEALTH", "PENDING", "DELIVERED", "FAILED", "SPOOLED", "OLDEST PENDING", "OK 1H", "OK 24H", "LAST SUCCESS"}
	rows := [][]string{header}
	row := func(din string, h report.Health, c report.Counts) {
		oldest := "-"
		if c.OldestPendingAgeSeconds != nil {
			oldest = report.Age(time.Duration(*c.OldestPendingAgeSeconds * float64(time.Second)))
		}
		rows = append(rows, []string{din, string(h), strconv.Itoa(c.Pending), strconv.Itoa(c.Delivered), strconv.Itoa(c.Failed),
			strconv.Itoa(c.Spooled), oldest, report.Percent(c.LastHour.SuccessRate), report.Percent(c.LastDay.SuccessRate),
			ago(st.GeneratedAt, c.LastSuccess)})
	}
	for _, d := range st.Destinations {
		din := d.DIN
		if !d.Configured {
			din += " (removed)"
		}
		row(din, d.Health, d.Counts)
	}
	row("TOTAL", st.Totals.Health, st.Totals.Counts)

	widths := make([]int, len(header))
	for _, r := range rows {
		for i, cell := range r {
			widths[i] = max(widths[i], utf8.RuneCountInString(cell))
		}
	}
	var buf bytes.Buffer
	for _, r := range rows {
		for i, cell := range r {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(cell))
			switch {
			case i == len(r)-1:
				buf.WriteString(cell) // no trailing blanks
			case i < 2: // DIN, HEALTH
				buf.WriteString(cell + pad + "  ")
			default:
				buf.WriteString(pad + cell + "  ")
			}
		}
		buf.WriteString("\n")
	}
	// Reasons and last errors are free text: listed below the table, where
	// their length does not stretch the columns.
	for _, d := range st.Destinations {
		if d.Health == report.HealthOK || d.Health == report.HealthIdle {
			continue
		}
		fmt.Fprintf(&buf, "\n%s %s: %s", d.DIN, d.Health, d.HealthReason)
		if d.LastError != nil {
			fmt.Fprintf(&buf, "\n    last error %s: %s", ago(st.GeneratedAt, &d.LastError.At), d.LastError.Message)
		}
		buf.WriteString("\n")
	}
	if len(st.Destinations) == 0 {
		buf.WriteString("\nno destinations configured\n")
	}
	_, err := out.Write(buf.Bytes())
	return err
}

func ago(now time.Time, t *time.Time) string {
	if t == nil {
		return "never"
	}
	return report.Age(now.Sub(*t)) + " ago"
}
