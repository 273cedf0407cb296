package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/postbackedge/caddy-postback/handlers"
)

// DenyResponse is the response a legacy sender understands, shared by the
// postback handlers. Without it a denial becomes a Caddy handler error, which
// handle_errors can shape.
type DenyResponse struct {
	// Status of the deny response; placeholders allowed. Defaults to the
	// denial's own status (405, 403, 413, ...).
	Status caddyhttp.WeakString `json:"deny_status,omitempty"`
	// Body of the deny response; placeholders such as {postback.deny_reason}
	// allowed. A body ending without a newline is sent as written.
	Body string `json:"deny_body,omitempty"`
}

// configured reports whether a custom response was configured.
func (d DenyResponse) configured() bool { return d.Status != "" || d.Body != "" }

// validate checks a literal deny_status at load time.
func (d DenyResponse) validate() error {
	if d.Status == "" || strings.Contains(string(d.Status), "{") {
		return nil
	}
	code, err := strconv.Atoi(string(d.Status))
	if err != nil || code < 100 || code > 999 {
		return fmt.Errorf("deny_status %q: not an HTTP status code", d.Status)
	}
	return nil
}

// unmarshalDenyOption parses deny_status / deny_body subdirectives; it
// reports whether the current token was one of them.
func (d *DenyResponse) unmarshalDenyOption(h *caddyfile.Dispenser) (bool, error) {
	switch h.Val() {
	case "deny_status":
		if !h.NextArg() {
			return true, h.ArgErr()
		}
		d.Status = caddyhttp.WeakString(h.Val())
	case "deny_body":
		if !h.NextArg() {
			return true, h.ArgErr()
		}
		// Caddyfile strings do not interpret \n, but a legacy sender expects
		// "SALE DECLINED\nNOT ALLOWED IP" on two lines.
		d.Body = strings.ReplaceAll(h.Val(), `\n`, "\n")
	default:
		return false, nil
	}
	if h.NextArg() {
		return true, h.ArgErr()
	}
	return true, nil
}

// denier answers refused requests: placeholder, metric, one log line, then
// the configured response or a handler error.
type denier struct {
	resp    DenyResponse
	logger  *zap.Logger
	metrics *Metrics
}

func (dn *denier) deny(w http.ResponseWriter, r *http.Request, d *handlers.Denial) error {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl != nil {
		repl.Set("postback.deny_reason", d.Reason)
	}
	dn.metrics.Filtered.WithLabelValues(d.Reason).Inc()
	note(r).Refuse(d.Reason)
	if len(d.Allow) > 0 {
		w.Header().Set("Allow", strings.Join(d.Allow, ", "))
	}
	if !dn.resp.configured() {
		dn.logDenial(r, d, d.Status)
		return caddyhttp.Error(d.Status, d)
	}
	status := d.Status
	if dn.resp.Status != "" {
		s := string(dn.resp.Status)
		if repl != nil {
			s = repl.ReplaceAll(s, "")
		}
		code, err := strconv.Atoi(s)
		if err != nil || code < 100 || code > 999 {
			dn.logDenial(r, d, http.StatusInternalServerError)
			return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("deny_status %q: not an HTTP status code", s))
		}
		status = code
	}
	dn.logDenial(r, d, status)
	body := dn.resp.Body
	if repl != nil {
		body = repl.ReplaceKnown(body, "")
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, err := w.Write([]byte(body))
	return err
}

// logDenial writes the refusal's one log line with the status actually
// sent (deny_status may turn a 403 into a 200 a legacy sender expects).
// Never the body or the query: they carry card numbers and passwords.
func (dn *denier) logDenial(r *http.Request, d *handlers.Denial, status int) {
	clientIP, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	dn.logger.Info("request denied",
		zap.String("reason", d.Reason),
		zap.String("client_ip", clientIP),
		zap.String("method", r.Method),
		zap.String("path", r.URL.Path),
		zap.Int("status", status))
}

// asDenial unwraps a handlers.Denial from err.
func asDenial(err error) (*handlers.Denial, bool) {
	var d *handlers.Denial
	ok := errors.As(err, &d)
	return d, ok
}
