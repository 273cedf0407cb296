package caddymodule

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/postbackedge/caddy-postback/handlers"
)

func init() {
	caddy.RegisterModule(ITNSVerify{})
}

// ITNSVerify refuses payment notifications that do not prove their sender
// before the legacy script sees them: ITNS / ClickBank / JVZoo forms whose
// signature (the <prefix>verify field) does not match one of the
// configured secrets, Digistore24 IPNs whose sha_sign does not (algorithm
// digistore24), ClickBank INS 6.0+ JSON that no secret decrypts (format
// clickbank_json), bodies that are not well-formed, and stale notifications;
// with dedupe it answers a replay of an accepted notification from the first
// response instead of passing it on. The body reaches the next handler byte
// for byte as the sender posted it.
//
// It sets these placeholders:
//
// Placeholder | Description
// ------------|-------------
// `{postback.deny_reason}` | Why a notification was refused (content_type, malformed, signature_mismatch, decrypt_failed, stale, …)
// `{postback.itns.secret_index}` | Which configured secret matched, from 0
// `{postback.receipt}` | The notification's receipt (format clickbank_json)
// `{postback.transaction_type}` | Its transactionType: SALE, BILL, RFND, … (format clickbank_json)
// `{postback.role}` | Its role: VENDOR, AFFILIATE, … (format clickbank_json)
//
// The last three are set for an accepted notification, and only to values
// of letters, digits and "_-.*" (at most 64): anything else leaves them
// empty, so that no customer data reaches an access log or an error page.
type ITNSVerify struct {
	// Secrets shared with the sender; any one matching is valid, so a secret
	// can be rotated without downtime. Use placeholders known at load time
	// ({env.ITNS_SECRET}, {file./etc/caddy/itns.secret}): a literal secret is
	// visible to anyone who can read the config through the admin API.
	Secrets []string `json:"secrets,omitempty"`
	// Format of the body: "form" (default; application/x-www-form-urlencoded,
	// signed by Algorithm) or "clickbank_json" (ClickBank INS 6.0, 7.0, 8.0:
	// {"notification", "iv"}, AES-256-CBC encrypted with a key derived from
	// the secret; takes no Prefix, Algorithm or MaxFields).
	Format string `json:"format,omitempty"`
	// Prefix of the field names: "" (AffiliCon default) or "c" (ClickBank
	// and JVZoo compatible). The signature field is <prefix>verify.
	Prefix string `json:"prefix,omitempty"`
	// Algorithm of a form's signature: "sorted" (default; ClickBank
	// 2.x/4.0, AffiliCon, JVZoo), "v1" (ClickBank 1.0 fixed field list) or
	// "digistore24" (Digistore24 IPN: SHA-512 in sha_sign or SHASIGN; takes
	// no Prefix and no MaxAge).
	Algorithm string `json:"algorithm,omitempty"`
	// MaxAge refuses a notification whose time (<prefix>transtime, or
	// clickbank_json's transactionTime) is older, or missing. 0 disables the
	// check. Not with digistore24, whose IPN carries no time of its own.
	MaxAge caddy.Duration `json:"max_age,omitempty"`
	// FutureSkew is how far ahead of our clock transtime may be when MaxAge
	// is set. Default 2m.
	FutureSkew caddy.Duration `json:"future_skew,omitempty"`
	// Dedupe is the window within which a notification identical to an
	// accepted one is a replay (for clickbank_json: the same vendor,
	// receipt, transactionType, transactionTime and role, which a
	// notification must then carry). 0 disables replay detection. Needs the
	// postback app, whose store keeps the records.
	Dedupe caddy.Duration `json:"dedupe,omitempty"`
	// DedupeWait bounds how long a replay waits while the first copy is
	// still being processed, before it is answered 503. Default 10s.
	DedupeWait caddy.Duration `json:"dedupe_wait,omitempty"`
	// MaxBody is the largest body read, in bytes. Default 1 MiB.
	MaxBody int64 `json:"max_body,omitempty"`
	// MaxFields refuses a form notification with more fields (400
	// too_many_fields). Default 1000, PHP's max_input_vars: PHP drops the
	// fields past it, so the script would act on part of what was signed.
	MaxFields int `json:"max_fields,omitempty"`

	// deny_status and deny_body: the response for a refused notification.
	// Without them a refusal is a handler error (403 for signature and time
	// failures, 400 for a malformed body) for handle_errors.
	DenyResponse

	verifier   handlers.Verifier
	guard      *handlers.ReplayGuard
	denier     *denier
	busyDenier *denier // for replays in flight: always 503, so the sender retries
	metrics    *Metrics
	verified   []prometheus.Counter // by secret index
	logger     *zap.Logger
	retryAfter string
	app        *App // for the notification log; nil without a postback app
}

// CaddyModule returns the Caddy module information.
func (ITNSVerify) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.itns_verify",
		New: func() caddy.Module { return new(ITNSVerify) },
	}
}

// Provision resolves the secrets and, with dedupe, gets the replay store
// from the postback app.
func (v *ITNSVerify) Provision(ctx caddy.Context) error {
	v.logger = ctx.Logger()
	v.app = configuredApp(ctx)
	secrets, err := resolveSecrets(caddy.NewReplacer(), v.Secrets)
	if err != nil {
		return err
	}
	for i, s := range v.Secrets {
		if !strings.Contains(s, "{") {
			v.logger.Warn("itns_verify secret is written literally in the config, where the admin API shows it; prefer {env.*} or {file.*}",
				zap.Int("secret_index", i))
		}
	}
	cfg := v.verifierConfig()
	cfg.Secrets = secrets
	if v.verifier, err = handlers.NewVerifier(cfg); err != nil {
		return err
	}
	if v.Algorithm == "v1" && v.MaxAge > 0 {
		v.logger.Warn("itns_verify: algorithm v1 does not sign transtime, so max_age cannot stop a replay with a fresh time")
	}
	if v.metrics, err = loadMetrics(ctx); err != nil {
		return err
	}
	v.verified = make([]prometheus.Counter, len(secrets))
	for i := range secrets {
		v.verified[i] = v.metrics.Verified.WithLabelValues(strconv.Itoa(i))
	}
	v.denier = &denier{resp: v.DenyResponse, logger: v.logger, metrics: v.metrics}
	busy := v.DenyResponse
	busy.Status = ""
	v.busyDenier = &denier{resp: busy, logger: v.logger, metrics: v.metrics}

	if v.Dedupe > 0 {
		store, owner, err := replayStoreFrom(ctx)
		if err != nil {
			return fmt.Errorf("dedupe: %w", err)
		}
		v.guard, err = handlers.NewReplayGuard(store, handlers.ReplayOptions{
			Window: time.Duration(v.Dedupe),
			Wait:   time.Duration(v.DedupeWait),
			Owner:  owner,
		})
		if err != nil {
			return fmt.Errorf("dedupe: %w", err)
		}
		wait := time.Duration(v.DedupeWait)
		if wait == 0 {
			wait = handlers.DefaultReplayWait
		}
		v.retryAfter = strconv.Itoa(int(math.Ceil(wait.Seconds())))
	}
	return nil
}

// verifierConfig is the handler's scheme without its secrets, for the
// handlers package's rules (handlers.VerifierConfig.CheckOptions).
func (v *ITNSVerify) verifierConfig() handlers.VerifierConfig {
	return handlers.VerifierConfig{
		Format:     v.Format,
		Algorithm:  v.Algorithm,
		Prefix:     v.Prefix,
		MaxAge:     time.Duration(v.MaxAge),
		FutureSkew: time.Duration(v.FutureSkew),
		MaxFields:  v.MaxFields,
		Dedupe:     v.Dedupe > 0,
	}
}

// resolveSecrets expands the placeholders known at load time. A secret
// that expands to nothing (unset variable, missing or empty file) is an
// error: an empty secret would make signatures computable by anyone. The
// messages name the secret by its index, never its value.
func resolveSecrets(repl *caddy.Replacer, raw []string) ([][]byte, error) {
	if len(raw) == 0 {
		return nil, errors.New("at least one secret is required")
	}
	out := make([][]byte, len(raw))
	for i, s := range raw {
		val, err := resolveSecret(repl, s)
		if err != nil {
			return nil, fmt.Errorf("secret %d: %w", i, err)
		}
		out[i] = val
	}
	return out, nil
}

// resolveSecret is one secret of resolveSecrets.
func resolveSecret(repl *caddy.Replacer, s string) ([]byte, error) {
	val, err := repl.ReplaceOrErr(s, true, true)
	if err != nil {
		// Name the placeholder when the entry is one, never a literal.
		if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") && strings.Count(s, "{") == 1 {
			return nil, fmt.Errorf("%s: placeholder not known at load time or empty (unset variable, unreadable or empty file?)", s)
		}
		return nil, errors.New("placeholder not known at load time or empty (unset variable, unreadable or empty file?)")
	}
	if val == "" {
		return nil, errors.New("empty")
	}
	return []byte(val), nil
}

// Validate checks what Provision does not.
func (v *ITNSVerify) Validate() error {
	if v.MaxAge < 0 || v.FutureSkew < 0 || v.Dedupe < 0 || v.DedupeWait < 0 {
		return errors.New("max_age, future_skew, dedupe and dedupe_wait must not be negative")
	}
	if v.MaxFields < 0 {
		return fmt.Errorf("max_fields %d: must not be negative", v.MaxFields)
	}
	if v.MaxBody < 0 {
		return fmt.Errorf("max_body %d: must not be negative", v.MaxBody)
	}
	if err := v.verifierConfig().CheckOptions(); err != nil {
		return err
	}
	return v.DenyResponse.validate()
}

// ServeHTTP verifies the notification, then passes it on or answers it.
func (v *ITNSVerify) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) (err error) {
	w, r, done := v.app.beginNote(w, r)
	defer func() { done(err) }()
	body, err := handlers.CaptureBody(r, v.MaxBody)
	if err != nil {
		if d, ok := asDenial(err); ok {
			return v.denier.deny(w, r, d)
		}
		return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("itns_verify: %w", err))
	}
	n, err := v.verifier.Check(r.Header.Get("Content-Type"), body, time.Now())
	if err != nil {
		var fe *handlers.FormError
		if errors.As(err, &fe) && fe.Field != "" {
			// The name only: values may be card data.
			v.logger.Debug("itns form refused", zap.String("field", fe.Field))
		}
		if d, ok := asDenial(err); ok {
			return v.denier.deny(w, r, d)
		}
		return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("itns_verify: %w", err))
	}
	idx := n.SecretIndex
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("postback.itns.secret_index", idx)
		// Safe identifiers only (handlers.SafeIdentifier), or empty.
		if n.Receipt != "" || n.TransactionType != "" || n.Role != "" {
			repl.Set("postback.receipt", n.Receipt)
			repl.Set("postback.transaction_type", n.TransactionType)
			repl.Set("postback.role", n.Role)
		}
	}
	// A counter, not an Info line: a log write per notification cost ~3 % of
	// the chain's CPU (docs/performance-history.md), and a rotation is watched per secret.
	if idx >= 0 && idx < len(v.verified) {
		v.verified[idx].Inc()
	}
	if ce := v.logger.Check(zapcore.DebugLevel, "itns notification verified"); ce != nil {
		fields := []zap.Field{zap.Int("secret_index", idx), zap.Int("fields", n.Fields), zap.String("path", r.URL.Path)}
		if n.Receipt != "" {
			fields = append(fields, zap.String("receipt", n.Receipt), zap.String("transaction_type", n.TransactionType))
		}
		ce.Write(fields...)
	}
	if v.guard == nil {
		return next.ServeHTTP(w, r)
	}
	return v.serveDeduped(w, r, next, n.ReplayKey())
}

// serveDeduped passes the first copy of a notification on and records its
// answer; a replay gets that answer without being passed on.
func (v *ITNSVerify) serveDeduped(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, key []byte) error {
	res, err := v.guard.Begin(r.Context(), key)
	if err != nil {
		if d, ok := asDenial(err); ok {
			note(r).Replay(true)
			v.metrics.DedupeReplays.WithLabelValues("in_flight").Inc()
			w.Header().Set("Retry-After", v.retryAfter)
			return v.busyDenier.deny(w, r, d)
		}
		if errors.Is(err, handlers.ErrReplayStore) {
			// Without the record a replay cannot be recognised: the sender
			// retries a 503, which is safer than a possible duplicate.
			v.logger.Error("itns dedupe store unavailable", zap.Error(err))
			v.metrics.DedupeUnavailable.Inc()
			note(r).Refuse("dedupe_unavailable")
			w.Header().Set("Retry-After", v.retryAfter)
			return caddyhttp.Error(http.StatusServiceUnavailable, err)
		}
		return caddyhttp.Error(http.StatusServiceUnavailable, fmt.Errorf("itns_verify: %w", err))
	}
	if res.Answer != nil {
		note(r).Replay(false)
		v.metrics.DedupeReplays.WithLabelValues("answered").Inc()
		v.logger.Info("itns replay answered from the first response",
			zap.Int("status", res.Answer.Status),
			zap.Time("first_answered", res.Answer.Time))
		h := w.Header()
		if res.Answer.ContentType != "" {
			h.Set("Content-Type", res.Answer.ContentType)
		}
		h.Set("Content-Length", strconv.Itoa(len(res.Answer.Body)))
		w.WriteHeader(res.Answer.Status)
		_, err := w.Write(res.Answer.Body)
		return err
	}
	if res.Retry {
		v.metrics.DedupeReplays.WithLabelValues("retried").Inc()
	}

	ticket := res.Ticket
	// Whatever happens below, even a panic, the waiting replays must learn
	// the outcome; Fail after Finish does nothing.
	defer func() {
		if err := ticket.Fail(); err != nil {
			v.logger.Error("itns dedupe: could not clear the in-flight record", zap.Error(err))
		}
	}()
	rec := &replayRecorder{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}}
	if err := next.ServeHTTP(rec, r); err != nil {
		return err
	}
	status := rec.status
	if status == 0 {
		status = http.StatusOK // nothing written: net/http answers 200
	}
	complete := !rec.overflow && rec.writeErr == nil
	if status >= 200 && status <= 299 && !complete {
		v.logger.Warn("itns dedupe: response not recorded (larger than the replay limit, or the client went away); a replay will be passed on",
			zap.Int("status", status), zap.Int("limit", handlers.MaxReplayBody))
	}
	if err := ticket.Finish(status, rec.contentType, rec.buf.Bytes(), complete); err != nil {
		v.logger.Error("itns dedupe: could not record the response", zap.Error(err))
	}
	return nil
}

// replayRecorder streams the response to the client unchanged and keeps a
// copy of its status, content type and first MaxReplayBody bytes.
// caddyhttp.NewResponseRecorder decides to buffer before the body is known,
// so it cannot bound a response without Content-Length (FastCGI answers are
// usually chunked); teeing keeps streaming and bounds the memory.
type replayRecorder struct {
	*caddyhttp.ResponseWriterWrapper
	status      int
	contentType string
	buf         bytes.Buffer
	overflow    bool
	writeErr    error
}

func (rr *replayRecorder) WriteHeader(code int) {
	// 1xx responses are informational: passed on, not the answer.
	if rr.status == 0 && code >= 200 {
		rr.status = code
		rr.contentType = rr.Header().Get("Content-Type")
	}
	rr.ResponseWriterWrapper.WriteHeader(code)
}

func (rr *replayRecorder) Write(p []byte) (int, error) {
	if rr.status == 0 {
		rr.WriteHeader(http.StatusOK)
	}
	n, err := rr.ResponseWriterWrapper.Write(p)
	if err != nil && rr.writeErr == nil {
		rr.writeErr = err
	}
	if !rr.overflow {
		if rr.buf.Len()+n > handlers.MaxReplayBody {
			rr.overflow = true
			rr.buf = bytes.Buffer{}
		} else {
			rr.buf.Write(p[:n])
		}
	}
	return n, err
}

// ReadFrom goes through Write, so the copy is recorded (the wrapper's
// ReadFrom would hand the reader to the underlying writer directly).
func (rr *replayRecorder) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(itnsWriterOnly{rr}, r)
}

// itnsWriterOnly hides ReadFrom from io.Copy, which would otherwise call it back.
type itnsWriterOnly struct{ io.Writer }

// Interface guards
var (
	_ caddy.Provisioner           = (*ITNSVerify)(nil)
	_ caddy.Validator             = (*ITNSVerify)(nil)
	_ caddyhttp.MiddlewareHandler = (*ITNSVerify)(nil)
	_ caddyfile.Unmarshaler       = (*ITNSVerify)(nil)
	_ http.ResponseWriter         = (*replayRecorder)(nil)
	_ io.ReaderFrom               = (*replayRecorder)(nil)
)
