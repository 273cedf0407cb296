package caddymodule

import (
	"fmt"
	"net/http"
	"path"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/postbackedge/caddy-postback/report"
)

func init() {
	caddy.RegisterModule(Report{})
}

// Report serves the operators' report page: per-destination health cards,
// deliveries per hour over the last day, a filterable table of deliveries, a
// detail view with the attempt history and a retry button. It shows no
// payloads. Protect it with basic_auth (or another authentication handler)
// before it in the route.
type Report struct {
	// Prefix is the path the page is mounted at, e.g. /postback-report:
	// requests outside it go to the next handler. Optional: without it the
	// page serves every request that reaches it, finding its root from the
	// path (the part before /deliveries/…).
	Prefix string `json:"prefix,omitempty"`
	// Title of the page. Default "Postback deliveries".
	Title string `json:"title,omitempty"`
	// PageSize is the number of deliveries per table page (1 to 1000).
	// Default 25.
	PageSize int `json:"page_size,omitempty"`

	app    *App
	page   *report.Page
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Report) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.postback_report",
		New: func() caddy.Module { return new(Report) },
	}
}

// csrfKey signs the page's form tokens. It is per process, not per config,
// so a reload does not invalidate the retry buttons of open pages.
var csrfKey = sync.OnceValue(report.NewCSRFKey)

// Provision finds the postback app of this config.
func (h *Report) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.Prefix != "" {
		if !strings.HasPrefix(h.Prefix, "/") {
			return fmt.Errorf("postback_report: prefix %q must start with /", h.Prefix)
		}
		h.Prefix = strings.TrimSuffix(path.Clean(h.Prefix), "/")
	}
	if h.PageSize < 0 || h.PageSize > report.MaxLimit {
		return fmt.Errorf("postback_report: page_size %d: want 1 to %d", h.PageSize, report.MaxLimit)
	}
	appIface, err := ctx.App("postback")
	if err != nil {
		return fmt.Errorf("postback_report: %w", err)
	}
	h.app = appIface.(*App)
	csrf, err := report.NewCSRF(csrfKey())
	if err != nil {
		return fmt.Errorf("postback_report: %w", err)
	}
	h.page = &report.Page{
		Source:   h.app.source,
		Title:    h.Title,
		PageSize: h.PageSize,
		CSRF:     csrf,
	}
	return nil
}

// ServeHTTP serves the page. With a Prefix, requests outside it go to the
// next handler; without one the page's own routes are recognised at the end
// of the path, so any matcher (route /report*, handle_path /report/*) works.
func (h *Report) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	rel := report.RelPath(r.URL.Path)
	if h.Prefix != "" {
		rest, ok := strings.CutPrefix(r.URL.Path, h.Prefix)
		if !ok || rest != "" && !strings.HasPrefix(rest, "/") {
			return next.ServeHTTP(w, r)
		}
		if rest == "" {
			// Canonical root with a trailing slash, like a directory.
			http.Redirect(w, r, externalPath(r, r.URL.Path)+"/", http.StatusMovedPermanently)
			return nil
		}
		rel = rest
	}
	m := report.Mount{Base: basePath(r, rel), Rel: rel, User: authUser(r)}
	if err := h.page.Serve(w, r, m); err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	return nil
}

// basePath is the page root as the browser sees it: the original request
// path without rel, so links stay right under handle_path and rewrites that
// strip a prefix.
func basePath(r *http.Request, rel string) string {
	orig := externalPath(r, r.URL.Path)
	if base, ok := strings.CutSuffix(orig, rel); ok {
		return base
	}
	if rel == "/" {
		if base, ok := strings.CutSuffix(orig+"/", rel); ok {
			return base
		}
	}
	// A rewrite we cannot follow: fall back to the path we were given.
	return strings.TrimSuffix(strings.TrimSuffix(r.URL.Path, rel), "/")
}

// externalPath is the path of the request before any rewrite, or fallback.
func externalPath(r *http.Request, fallback string) string {
	if orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok && orig.URL != nil {
		return orig.URL.Path
	}
	return fallback
}

// authUser is the user basic_auth (or another authenticator) let in.
func authUser(r *http.Request) string {
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return ""
	}
	return repl.ReplaceAll("{http.auth.user.id}", "")
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Report)(nil)
	_ caddyhttp.MiddlewareHandler = (*Report)(nil)
)
