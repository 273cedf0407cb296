package caddymodule

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
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
		o       signOptions
		postURL string
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "sign --secret <secret> [--format form|clickbank_json] [--prefix c] [--algorithm sorted|v1|digistore24] [--post <url>] [<name=value>...]",
		Short: "Print a notification signed (or encrypted) as itns_verify expects",
		Long: `
Signs the given fields as an ITNS (AffiliCon), ClickBank, JVZoo or
Digistore24 sender would and prints the URL-encoded form body with the
signature field appended (<prefix>verify, or sha_sign for --algorithm
digistore24), so an endpoint behind itns_verify can be tested:

  curl -d "$(caddy postback sign --secret '{env.ITNS_SECRET}' --prefix c \
      ctransaction=SALE ctranreceipt=TEST1234 ccustemail=test@example.com)" \
      https://shop.example.com/itns.php

With --format clickbank_json it prints what ClickBank INS 6.0+ posts
instead: {"notification": …, "iv": …}, the notification encrypted with a
random IV. The name=value arguments make the notification a JSON object of
strings, in their order; without arguments a JSON object is read from
standard input and used as it is:

  caddy postback sign --format clickbank_json --secret '{env.CLICKBANK_SECRET}' \
      --transtime-now receipt=TEST1234 transactionType=TEST role=VENDOR vendor=myshop

Values are given as they are meant (not URL-encoded): name=value, split at
the first '='. The field order is kept in the body; the signature does not
depend on it.

--secret accepts Caddy placeholders such as {env.ITNS_SECRET} or
{file./etc/caddy/itns.secret}, which keep the secret out of the shell history
and the process list.

--transtime-now adds <prefix>transtime with the current Unix time (for
clickbank_json: transactionTime, RFC 3339), for endpoints with max_age.
--post sends the body (as a form, or as application/json) and prints the
response; the exit status is non-zero unless the response is a 2xx.`,
		Args: cobra.ArbitraryArgs,
		// A refused POST or a bad field is not a usage mistake.
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			body, contentType, err := o.sign(args, cmd.InOrStdin(), time.Now())
			if err != nil {
				return err
			}
			if postURL == "" {
				_, err := fmt.Fprintln(cmd.OutOrStdout(), body)
				return err
			}
			return postSigned(cmd.Context(), cmd.OutOrStdout(), postURL, contentType, body, timeout)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&o.secret, "secret", "", "the shared secret; placeholders such as {env.ITNS_SECRET} allowed (required)")
	fl.StringVar(&o.format, "format", "", "form (default) or clickbank_json (ClickBank INS 6.0+, encrypted JSON)")
	fl.StringVar(&o.prefix, "prefix", "", `field-name prefix: "" (AffiliCon) or c (ClickBank, JVZoo)`)
	fl.StringVar(&o.algorithm, "algorithm", "", "sorted (default: ClickBank 2.x/4.0, AffiliCon, JVZoo), v1 (ClickBank 1.0) or digistore24")
	fl.StringVar(&postURL, "post", "", "POST the body to this URL and print the response")
	fl.BoolVar(&o.transtimeNow, "transtime-now", false, "add <prefix>transtime (clickbank_json: transactionTime) with the current time")
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

// signOptions are the flags of `caddy postback sign` that shape the body.
type signOptions struct {
	secret, format, prefix, algorithm string
	transtimeNow                      bool
}

// maxSignInput bounds a notification read from standard input.
const maxSignInput = 1 << 20

// sign returns the body a sender would post for args (name=value fields;
// for clickbank_json without arguments, a JSON object read from stdin) and
// its content type.
func (o signOptions) sign(args []string, stdin io.Reader, now time.Time) (body, contentType string, err error) {
	if o.format != handlers.FormatClickBankJSON {
		fields, err := parseFieldArgs(args)
		if err != nil {
			return "", "", err
		}
		body, err := o.signFields(fields, now)
		return body, formContentType, err
	}
	var plain []byte
	if len(args) > 0 {
		fields, err := parseFieldArgs(args)
		if err != nil {
			return "", "", err
		}
		if plain, err = jsonObjectOf(fields); err != nil {
			return "", "", err
		}
	} else {
		if f, ok := stdin.(*os.File); ok {
			if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
				return "", "", errors.New("no fields: give name=value arguments or a JSON notification on standard input")
			}
		}
		if plain, err = io.ReadAll(io.LimitReader(stdin, maxSignInput+1)); err != nil {
			return "", "", fmt.Errorf("reading the notification from standard input: %w", err)
		}
		if len(plain) > maxSignInput {
			return "", "", fmt.Errorf("the notification on standard input is over %d bytes", maxSignInput)
		}
		if plain = bytes.TrimSpace(plain); len(plain) == 0 {
			return "", "", errors.New("no fields: give name=value arguments or a JSON notification on standard input")
		}
	}
	b, err := o.signJSON(plain, now)
	return b, "application/json", err
}

// check resolves the secret and applies the handlers' rules on format,
// algorithm and prefix.
func (o signOptions) check() ([][]byte, error) {
	if o.secret == "" {
		return nil, errors.New("--secret is required")
	}
	secrets, err := resolveSecrets(caddy.NewReplacer(), []string{o.secret})
	if err != nil {
		return nil, fmt.Errorf("--secret: %w", err)
	}
	cfg := handlers.VerifierConfig{Format: o.format, Algorithm: o.algorithm, Prefix: o.prefix}
	if err := cfg.CheckOptions(); err != nil {
		return nil, err
	}
	return secrets, nil
}

// signFields signs a form: the ITNS / ClickBank / JVZoo algorithms, or
// Digistore24's.
func (o signOptions) signFields(fields []handlers.Field, now time.Time) (string, error) {
	secrets, err := o.check()
	if err != nil {
		return "", err
	}
	if o.algorithm == handlers.AlgorithmNameDigistore24 {
		if o.transtimeNow {
			return "", errors.New("--transtime-now: a Digistore24 IPN has no time field to set")
		}
		d, err := handlers.NewDigistore24(handlers.Digistore24Config{Secrets: secrets})
		if err != nil {
			return "", err
		}
		return d.SignForm(fields)
	}
	alg, err := handlers.ParseAlgorithm(o.algorithm)
	if err != nil {
		return "", fmt.Errorf("--algorithm: %w", err)
	}
	v, err := handlers.NewITNS(handlers.ITNSConfig{Secrets: secrets, Prefix: o.prefix, Algorithm: alg})
	if err != nil {
		return "", err
	}
	if o.transtimeNow {
		for _, f := range fields {
			if f.Name == v.TimeField() {
				return "", fmt.Errorf("--transtime-now and a %s argument: give one", f.Name)
			}
		}
		fields = append(fields, handlers.Field{Name: v.TimeField(), Value: strconv.FormatInt(now.Unix(), 10)})
	}
	return v.SignForm(fields)
}

// signJSON encrypts a ClickBank notification with a random IV.
func (o signOptions) signJSON(plain []byte, now time.Time) (string, error) {
	secrets, err := o.check()
	if err != nil {
		return "", err
	}
	if o.transtimeNow {
		var members map[string]json.RawMessage
		if err := json.Unmarshal(plain, &members); err != nil {
			return "", fmt.Errorf("the notification is not a JSON object: %w", err)
		}
		if _, ok := members["transactionTime"]; ok {
			return "", errors.New("--transtime-now and a transactionTime: give one")
		}
		// Appended to the text, so the rest stays as it was given.
		member, _ := json.Marshal(now.Format(time.RFC3339))
		sep := ","
		if len(members) == 0 {
			sep = ""
		}
		end := bytes.LastIndexByte(plain, '}')
		plain = append(append(bytes.Clone(plain[:end]), []byte(sep+`"transactionTime":`+string(member))...), plain[end:]...)
	}
	c, err := handlers.NewClickBankJSON(handlers.ClickBankJSONConfig{Secrets: secrets})
	if err != nil {
		return "", err
	}
	iv := make([]byte, 16)
	if _, err := rand.Read(iv); err != nil {
		return "", err
	}
	body, err := c.Encrypt(plain, iv)
	return string(body), err
}

// jsonObjectOf is the JSON object of fields, as strings, in their order.
func jsonObjectOf(fields []handlers.Field) ([]byte, error) {
	b := []byte{'{'}
	seen := map[string]bool{}
	for i, f := range fields {
		if seen[f.Name] {
			return nil, fmt.Errorf("field %q given twice", f.Name)
		}
		seen[f.Name] = true
		if i > 0 {
			b = append(b, ',')
		}
		name, _ := json.Marshal(f.Name)
		value, _ := json.Marshal(f.Value)
		b = append(append(append(b, name...), ':'), value...)
	}
	return append(b, '}'), nil
}

// signArgs signs fields as a form sender does (the tests' shorthand).
func signArgs(secret, prefix, algorithm string, fields []handlers.Field, transtimeNow bool, now time.Time) (string, error) {
	return signOptions{secret: secret, prefix: prefix, algorithm: algorithm, transtimeNow: transtimeNow}.signFields(fields, now)
}

// postSigned sends body as a POST of contentType and prints the status
// line and the response body.
func postSigned(ctx context.Context, out io.Writer, url, contentType, body string, timeout time.Duration) error {
	if ctx == nil {
		ctx = context.Background()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return fmt.Errorf("--post: %w", err)
	}
	req.Header.Set("Content-Type", contentType)
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
