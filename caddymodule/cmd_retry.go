package caddymodule

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/postbackedge/caddy-postback/report"
)

func init() {
	registerPostbackSubcommand(newRetryCommand)
}

// retryOptions are the flags of `caddy postback retry`.
type retryOptions struct {
	address, config, adapter string
	din, state, since, until string
}

func newRetryCommand() *cobra.Command {
	var o retryOptions
	cmd := &cobra.Command{
		Use:   "retry [--din <din>] [--state failed|spooled] [--since <time>] [--until <time>] [--address <interface>] [--config <path> [--adapter <name>]]",
		Short: "Put failed (or spooled) deliveries back for a new attempt, in bulk",
		Long: `
Asks the running Caddy (POST /postback/deliveries/retry on its admin API) to
put back every delivery that matches and can be retried: failed ones, and
spooled ones whose payload is still kept. It prints how many. Running it
again puts back none: they are pending by then.

--din and --state (failed or spooled; default both) narrow the selection;
--since and --until take a time (RFC 3339, or 2006-01-02) or an age such as
24h or 7d, measured by the running Caddy's clock.

In a fleet, the retry acts on this edge's deliveries.

The admin address is --address if given, else the one in --config, else
Caddy's default (localhost:2019), as for "caddy reload" and "caddy stop".`,
		Example:      "  caddy postback retry --din 1001 --state failed --since 24h",
		Args:         cobra.NoArgs,
		SilenceUsage: true,
	}
	cmd.RunE = func(c *cobra.Command, args []string) error {
		return caddycmd.WrapCommandFuncForCobra(func(caddycmd.Flags) (int, error) {
			if err := runRetry(c.OutOrStdout(), o); err != nil {
				return caddy.ExitCodeFailedStartup, err
			}
			return caddy.ExitCodeSuccess, nil
		})(c, args)
	}
	fl := cmd.Flags()
	fl.StringVar(&o.din, "din", "", "only this destination's deliveries")
	fl.StringVar(&o.state, "state", "", "failed or spooled (default: both)")
	fl.StringVar(&o.since, "since", "", "only deliveries created at or after this time or age (24h, 7d, 2026-01-31)")
	fl.StringVar(&o.until, "until", "", "only deliveries created before this time or age")
	fl.StringVar(&o.address, "address", "", "the admin API address, if not the one in --config or the default")
	fl.StringVarP(&o.config, "config", "c", "", "configuration file to read the admin address from, if --address is not used")
	fl.StringVarP(&o.adapter, "adapter", "a", "", "name of the config adapter for --config")
	return cmd
}

// runRetry sends the bulk retry; the admin API checks the filter, so that
// its rules have one home.
func runRetry(out io.Writer, o retryOptions) error {
	addr, err := caddycmd.DetermineAdminAPIAddress(o.address, nil, o.config, o.adapter)
	if err != nil {
		return fmt.Errorf("finding the admin API address: %w", err)
	}
	q := url.Values{}
	for name, v := range map[string]string{"din": o.din, "state": o.state, "since": o.since, "until": o.until} {
		if v != "" {
			q.Set(name, v)
		}
	}
	uri := report.APIPrefix + "deliveries/retry"
	if len(q) > 0 {
		uri += "?" + q.Encode()
	}
	resp, err := caddycmd.AdminAPIRequest(addr, http.MethodPost, uri, nil, nil)
	if err != nil {
		return fmt.Errorf("bulk retry through the admin API at %s: %w", addr, err)
	}
	defer resp.Body.Close()
	var res report.BulkRetry
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&res); err != nil {
		return fmt.Errorf("admin API at %s: unexpected answer to %s: %w", addr, uri, err)
	}
	_, err = fmt.Fprintf(out, "%d %s put back for a new attempt\n", res.Retried, map[bool]string{true: "delivery", false: "deliveries"}[res.Retried == 1])
	return err
}
