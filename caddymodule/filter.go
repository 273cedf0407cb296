package caddymodule

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/postbackedge/caddy-postback/handlers"
)

func init() {
	caddy.RegisterModule(PostbackFilter{})
}

// PostbackFilter refuses, before the legacy script sees them, requests with
// a method it does not accept, from a sender not in the allowlist, or with a
// body larger than max_body. It reads the body once (up to max_body) and
// hands the same bytes on, so later postback handlers do not read it again.
//
// The sender is the client IP Caddy determined: the peer address, or, when
// the peer is one of the server's trusted_proxies, the address taken from
// client_ip_headers. A raw X-Forwarded-For from any other peer is ignored.
type PostbackFilter struct {
	// Request methods let through (case-insensitive here, exact on the
	// wire). Default: POST. HEAD and OPTIONS are not implied.
	Methods []string `json:"methods,omitempty"`

	// Sender addresses and CIDR networks, IPv4 or IPv6. Placeholders known
	// at load time ({env.*}, {file.*}) are expanded, and the result is split
	// on spaces and commas. Empty: every sender is let through (a warning is
	// logged at provision).
	Allow []string `json:"allow,omitempty"`

	// Largest request body in bytes. Default: 1 MiB.
	MaxBody int64 `json:"max_body,omitempty"`

	// Most fields in a form body (application/x-www-form-urlencoded) or a
	// GET query string. Default 1000, PHP's max_input_vars: PHP silently
	// drops the fields past it, so the script would see part of the post.
	MaxFields int `json:"max_fields,omitempty"`

	// deny_status and deny_body: the response for a refused request.
	// Without them the refusal is a handler error for handle_errors.
	DenyResponse

	methods *handlers.MethodPolicy
	allow   *handlers.Allowlist
	maxBody int64
	denier  *denier
	logger  *zap.Logger
	app     *App // for the notification log; nil without a postback app
}

// CaddyModule returns the Caddy module information.
func (PostbackFilter) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.postback_filter",
		New: func() caddy.Module { return new(PostbackFilter) },
	}
}

// Provision parses the method policy and the allowlist.
func (f *PostbackFilter) Provision(ctx caddy.Context) error {
	return f.provision(ctx, ctx.Logger())
}

// provision takes the logger apart so tests can observe what is logged.
func (f *PostbackFilter) provision(ctx caddy.Context, logger *zap.Logger) error {
	f.logger = logger
	f.app = configuredApp(ctx)

	methods, err := handlers.ParseMethods(f.Methods)
	if err != nil {
		return fmt.Errorf("methods: %w", err)
	}
	f.methods = methods

	entries, err := expandAllowEntries(caddy.NewReplacer(), f.Allow)
	if err != nil {
		return err
	}
	allow, err := handlers.ParseAllowlist(entries)
	if err != nil {
		return err
	}
	f.allow = allow
	if allow.Empty() {
		f.logger.Warn("postback_filter has no allow list: every sender is let through",
			zap.Strings("methods", methods.Allowed()))
	} else {
		f.logger.Debug("postback_filter allow list",
			zap.Strings("allow", allow.Strings()),
			zap.Strings("methods", methods.Allowed()))
	}

	f.maxBody = f.MaxBody
	if f.maxBody == 0 {
		f.maxBody = handlers.DefaultMaxBody
	}

	metrics, err := loadMetrics(ctx)
	if err != nil {
		return err
	}
	f.denier = &denier{resp: f.DenyResponse, logger: f.logger, metrics: metrics}
	return nil
}

// expandAllowEntries resolves the placeholders known at load time in the
// allow entries and splits what they expand to, so that
// `allow {env.NATS_SENDERS}` may hold several addresses. An entry that
// expands to nothing, or still holds a placeholder, is an error: either
// would silently widen or narrow the allowlist.
func expandAllowEntries(repl *caddy.Replacer, raw []string) ([]string, error) {
	var out []string
	for _, e := range raw {
		if !strings.Contains(e, "{") {
			out = append(out, e)
			continue
		}
		v := repl.ReplaceKnown(e, "")
		if strings.ContainsAny(v, "{}") {
			return nil, fmt.Errorf("allow entry %q: placeholder not known at load time (only {env.*}, {file.*} and other global placeholders are)", e)
		}
		fields := strings.FieldsFunc(v, func(r rune) bool {
			return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r'
		})
		if len(fields) == 0 {
			return nil, fmt.Errorf("allow entry %q: expands to nothing (unset variable or empty file?)", e)
		}
		for _, fld := range fields {
			if _, err := handlers.ParseAllowEntry(fld); err != nil {
				return nil, fmt.Errorf("allow entry %q: %w", e, err)
			}
		}
		out = append(out, fields...)
	}
	return out, nil
}

// Validate checks what Provision does not.
func (f *PostbackFilter) Validate() error {
	if f.MaxFields < 0 {
		return fmt.Errorf("max_fields %d: must not be negative", f.MaxFields)
	}
	if f.MaxBody < 0 {
		return fmt.Errorf("max_body %d: must not be negative", f.MaxBody)
	}
	return f.DenyResponse.validate()
}

// ServeHTTP refuses the request or passes it on with its body captured.
// The sender is checked before the method, so that an unknown sender learns
// nothing about the endpoint (not even its Allow header).
func (f *PostbackFilter) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) (err error) {
	w, r, done := f.app.beginNote(w, r)
	defer func() { done(err) }()
	if !f.allow.Empty() && r.TLS != nil && !r.TLS.HandshakeComplete {
		// TLS early data (HTTP/3 0-RTT): the peer address is not verified
		// yet, and a replayed postback must not pass. 425 makes the client
		// retry after the handshake, as Caddy's client_ip matcher does.
		return caddyhttp.Error(http.StatusTooEarly, fmt.Errorf("TLS handshake not complete: sender cannot be verified"))
	}
	clientIP, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	if d := f.allow.Check(clientIP); d != nil {
		return f.denier.deny(w, r, d)
	}
	if d := f.methods.Check(r.Method); d != nil {
		return f.denier.deny(w, r, d)
	}
	// A request without a body (GET, or POST with Content-Length: 0) is
	// left as it is; there is nothing to bound.
	form := []byte(r.URL.RawQuery)
	if r.Body != nil && r.Body != http.NoBody {
		body, err := handlers.CaptureBody(r, f.maxBody)
		if err != nil {
			if d, ok := asDenial(err); ok {
				return f.denier.deny(w, r, d)
			}
			return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("postback_filter: %w", err))
		}
		if handlers.CheckFormContentType(r.Header.Get("Content-Type")) == nil {
			form = body
		}
	}
	if err := handlers.CheckFieldCount(form, f.MaxFields); err != nil {
		if d, ok := asDenial(err); ok {
			return f.denier.deny(w, r, d)
		}
		return err
	}
	return next.ServeHTTP(w, r)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*PostbackFilter)(nil)
	_ caddy.Validator             = (*PostbackFilter)(nil)
	_ caddyhttp.MiddlewareHandler = (*PostbackFilter)(nil)
	_ caddyfile.Unmarshaler       = (*PostbackFilter)(nil)
)
