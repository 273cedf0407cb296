package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/postbackedge/caddy-postback/handlers"
)

// postbackSubcommands build the subcommands of `caddy postback`. Each file
// that adds one (sign here, stats elsewhere) appends its constructor in its
// init function; it is only read afterwards, when Caddy builds its command
// tree, so the order of the files does not matter.
var postbackSubcommands []func() *cobra.Command

// registerPostbackSubcommand is for init functions only.
func registerPostbackSubcommand(build func() *cobra.Command) {
	postbackSubcommands = append(postbackSubcommands, build)
}

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "postback",
		Usage: "<command>",
		Short: "caddy-postback tools: sign test notifications, read delivery statistics",
		Long: `
Tools for the caddy-postback modules. Run "caddy postback <command> --help"
for the options of a command.`,
		CobraFunc: addPostbackSubcommands,
	})
	registerPostbackSubcommand(newSignCommand)
}

// addPostbackSubcommands fills the `caddy postback` command; without a
// subcommand it prints its help.
func addPostbackSubcommands(cmd *cobra.Command) {
	for _, build := range postbackSubcommands {
		cmd.AddCommand(build())
	}
}

// newPostbackCommand builds `postback` with its subcommands outside Caddy's
// command tree, for tests.
func newPostbackCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "postback <command>", Short: "caddy-postback tools"}
	addPostbackSubcommands(cmd)
	return cmd
}

func newSignCommand() *cobra.Command {
	var (
		secret, prefix, algorithm, postURL string
		transtimeNow                       bool
		timeout                            time.Duration
	)
	cmd := &cobra.Command{
		Use:   "sign --secret <secret> [--prefix c] [--algorithm sorted|v1] [--post <url>] <name=value>...",
		Short: "Print an ITNS / ClickBank notification signed as itns_verify expects",
		Long: `
Signs the given fields as an ITNS (AffiliCon) or ClickBank instant
notification sender would and prints the URL-encoded form body with the
<prefix>verify field appended, so an endpoint behind itns_verify can be tested:

  curl -d "$(caddy postback sign --secret '{env.ITNS_SECRET}' --prefix c \
      ctransaction=SALE ctranreceipt=TEST1234 ccustemail=test@example.com)" \
      https://shop.example.com/itns.php

Values are given as they are meant (not URL-encoded): name=value, split at
the first '='. The field order is kept in the body; the signature does not
depend on it.

--secret accepts Caddy placeholders such as {env.ITNS_SECRET} or
{file./etc/caddy/itns.secret}, which keep the secret out of the shell history
and the process list.

--transtime-now adds <prefix>transtime with the current Unix time, for
endpoints with max_age. --post sends the body as a form POST and prints the
response; the exit status is non-zero unless the response is a 2xx.`,
		Args: cobra.ArbitraryArgs,
		// A refused POST or a bad field is not a usage mistake.
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			fields, err := parseFieldArgs(args)
			if err != nil {
				return err
			}
			body, err := signArgs(secret, prefix, algorithm, fields, transtimeNow, time.Now())
			if err != nil {
				return err
			}
			if postURL == "" {
				_, err := fmt.Fprintln(cmd.OutOrStdout(), body)
				return err
			}
			return postSigned(cmd.Context(), cmd.OutOrStdout(), postURL, body, timeout)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&secret, "secret", "", "the shared secret; placeholders such as {env.ITNS_SECRET} allowed (required)")
	fl.StringVar(&prefix, "prefix", "", `field-name prefix: "" (AffiliCon) or c (ClickBank)`)
	fl.StringVar(&algorithm, "algorithm", "sorted", "sorted (ClickBank 2.x/4.0, AffiliCon) or v1 (ClickBank 1.0)")
	fl.StringVar(&postURL, "post", "", "POST the signed body to this URL and print the response")
	fl.BoolVar(&transtimeNow, "transtime-now", false, "add <prefix>transtime with the current Unix time")
	fl.DurationVar(&timeout, "timeout", 30*time.Second, "with --post: how long to wait for the response")
	return cmd
}

// parseFieldArgs reads name=value arguments.
func parseFieldArgs(args []string) ([]handlers.Field, error) {
	if len(args) == 0 {
		return nil, errors.New("no fields: give name=value arguments")
	}
	fields := make([]handlers.Field, 0, len(args))
	for _, a := range args {
		name, value, ok := strings.Cut(a, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("argument %q: want name=value", a)
		}
		fields = append(fields, handlers.Field{Name: name, Value: value})
	}
	return fields, nil
}

// signArgs resolves the secret and signs fields.
func signArgs(secret, prefix, algorithm string, fields []handlers.Field, transtimeNow bool, now time.Time) (string, error) {
	if secret == "" {
		return "", errors.New("--secret is required")
	}
	secrets, err := resolveSecrets(caddy.NewReplacer(), []string{secret})
	if err != nil {
		return "", fmt.Errorf("--secret: %w", err)
	}
	alg, err := handlers.ParseAlgorithm(algorithm)
	if err != nil {
		return "", fmt.Errorf("--algorithm: %w", err)
	}
	v, err := handlers.NewITNS(handlers.ITNSConfig{Secrets: secrets, Prefix: prefix, Algorithm: alg})
	if err != nil {
		return "", err
	}
	if transtimeNow {
		for _, f := range fields {
			if f.Name == v.TimeField() {
				return "", fmt.Errorf("--transtime-now and a %s argument: give one", f.Name)
			}
		}
		fields = append(fields, handlers.Field{Name: v.TimeField(), Value: strconv.FormatInt(now.Unix(), 10)})
	}
	return v.SignForm(fields)
}

// postSigned sends body as a form POST and prints the status line and the
// response body.
func postSigned(ctx context.Context, out io.Writer, url, body string, timeout time.Duration) error {
	if ctx == nil {
		ctx = context.Background()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return fmt.Errorf("--post: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", "caddy-postback-sign")
	resp, err := (&http.Client{Timeout: timeout}).Do(req)
	if err != nil {
		return fmt.Errorf("--post: %w", err)
	}
	defer resp.Body.Close()
	if _, err := fmt.Fprintf(out, "%s %s\n", resp.Proto, resp.Status); err != nil {
		return err
	}
	if _, err := io.Copy(out, io.LimitReader(resp.Body, 1<<20)); err != nil {
		return fmt.Errorf("--post: reading the response: %w", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("--post: %s answered %s", url, resp.Status)
	}
	return nil
}
