package report

import (
	"bytes"
	"crypto/rand"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

//go:embed templates/*.html
var templateFS embed.FS

var pageTemplate = template.Must(template.New("page.html").Funcs(template.FuncMap{
	"utc":          fmtUTC,
	"iso":          fmtTime,
	"ago":          agoText,
	"pct":          Percent,
	"pctWidth":     pctWidth,
	"shortID":      shortID,
	"age":          func(s *float64) string { return Age(time.Duration(*s * float64(time.Second))) },
	"rateArgs":     func(label string, w Window) rateArgs { return rateArgs{label, w} },
	"rateClass":    rateClass,
	"plotRight":    func(c Chart) float64 { return c.PlotX + c.PlotW },
	"plus":         func(a, b float64) float64 { return a + b },
	"minus":        func(a, b float64) float64 { return a - b },
	"resultDetail": resultDetail,
	"ms":           fmtMS,
	"statusText":   http.StatusText,
}).ParseFS(templateFS, "templates/*.html"))

// DefaultTitle and DefaultPageSize apply when Page leaves them empty.
const (
	DefaultTitle    = "Postback deliveries"
	DefaultPageSize = 25
)

// Page is the report page: health cards, the hourly chart, the delivery
// table with filters and paging, a detail view with the attempt history and
// a retry button. It is server-rendered and needs no JavaScript.
type Page struct {
	Source   func() (Source, error)
	Title    string
	PageSize int
	CSRF     *CSRF
	Now      func() time.Time // default time.Now
}

// Mount says where the page is for one request.
type Mount struct {
	// Base is the page root's path as the browser sees it, without a
	// trailing slash ("" at the site root).
	Base string
	// Rel is the request path below Base: "/", "/deliveries/{id}" or
	// "/deliveries/{id}/retry".
	Rel string
	// User is the authenticated user (from basic_auth), "" without one; the
	// CSRF token is bound to it.
	User string
}

// pageData is what the templates see.
type pageData struct {
	View      string // index, detail or error
	Title     string
	Base      string
	Nonce     string
	Now       time.Time
	Flash     string
	FlashKind string // ok or error
	CSRFToken string

	// index
	Stats    Stats
	Tally    []healthTally
	Chart    Chart
	ChartFor string
	Form     filterForm
	Rows     []DeliveryView
	FirstURL string
	NextURL  string
	RetryAll url.Values // the bulk retry form's filter; nil: no such button

	// detail
	Detail *DeliveryDetail

	// notifications
	Notes    []storage.Notification
	NoteForm notificationForm

	// error
	Status  int
	Message string
}

// filterForm is the filter bar's state.
type filterForm struct {
	DINs            []string
	DIN, State      string
	Node            string
	Fleet           bool   // a fleet's history: the node filter and column show
	Since, Until    string // datetime-local values, UTC
	States          []string
	Active          bool
	Limit           int // kept through the form when not the default
	DefaultPageSize int
}

// pageSize is the table's rows per page.
func (p *Page) pageSize() int {
	if p.PageSize > 0 {
		return p.PageSize
	}
	return DefaultPageSize
}

func (p *Page) now() time.Time {
	if p.Now != nil {
		return p.Now().UTC()
	}
	return time.Now().UTC()
}

// Serve answers one request for the page. Failures the operator can act on
// (bad filter, unknown delivery, refused retry) are rendered as the page;
// the returned error is only for what could not be rendered at all.
func (p *Page) Serve(w http.ResponseWriter, r *http.Request, m Mount) error {
	// A base of "//host" (or "/\host") would make links and the retry
	// redirect leave the site.
	m.Base = strings.TrimRight(m.Base, "/")
	for len(m.Base) > 1 && (m.Base[1] == '/' || m.Base[1] == '\\') {
		m.Base = "/" + m.Base[2:]
	}
	if m.Rel == "" {
		m.Rel = "/"
	}
	parts := strings.Split(strings.TrimPrefix(m.Rel, "/"), "/")
	switch {
	case m.Rel == "/":
		if !p.allow(w, r, m, http.MethodGet) {
			return nil
		}
		return p.index(w, r, m)
	case m.Rel == "/notifications":
		if !p.allow(w, r, m, http.MethodGet) {
			return nil
		}
		return p.notifications(w, r, m)
	case len(parts) == 2 && parts[0] == "deliveries" && parts[1] == "retry":
		if !p.allow(w, r, m, http.MethodPost) {
			return nil
		}
		return p.retryMatching(w, r, m)
	case len(parts) == 2 && parts[0] == "deliveries" && parts[1] != "":
		if !p.allow(w, r, m, http.MethodGet) {
			return nil
		}
		return p.detail(w, r, m, parts[1], "", "", http.StatusOK)
	case len(parts) == 3 && parts[0] == "deliveries" && parts[2] == "retry":
		if !p.allow(w, r, m, http.MethodPost) {
			return nil
		}
		return p.retry(w, r, m, parts[1])
	}
	return p.fail(w, r, m, http.StatusNotFound, "There is no such page. Go back to the overview.")
}

func (p *Page) allow(w http.ResponseWriter, r *http.Request, m Mount, method string) bool {
	if r.Method == method || method == http.MethodGet && r.Method == http.MethodHead {
		return true
	}
	if method == http.MethodGet {
		method = "GET, HEAD"
	}
	w.Header().Set("Allow", method)
	_ = p.fail(w, r, m, http.StatusMethodNotAllowed, "This address does not take a "+r.Method+" request.")
	return false
}

func (p *Page) base(m Mount) pageData {
	title := p.Title
	if title == "" {
		title = DefaultTitle
	}
	return pageData{Title: title, Base: m.Base, Now: p.now(), Nonce: newNonce()}
}

func (p *Page) source() (Source, error) {
	src, err := p.Source()
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return nil, e
		}
		return nil, &Error{Status: http.StatusServiceUnavailable, Message: err.Error(), Err: err}
	}
	return src, nil
}

func (p *Page) index(w http.ResponseWriter, r *http.Request, m Mount) error {
	data := p.base(m)
	data.View = "index"
	src, err := p.source()
	if err != nil {
		return p.failErr(w, r, m, err)
	}
	pageSize := p.pageSize()
	q := r.URL.Query()
	data.Form = filterForm{DIN: q.Get("din"), State: q.Get("state"), Node: q.Get("node"), Since: q.Get("since"), Until: q.Get("until"),
		DefaultPageSize: pageSize, States: []string{"pending", "delivered", "failed", "spooled", "held", "cancelled"}}
	f, ferr := ParseFilter(q, data.Now, pageSize, "retried")
	if ferr == nil {
		// Show what was understood, e.g. since=24h as the time it means.
		data.Form.Since, data.Form.Until = localInput(f.Since), localInput(f.Until)
		data.Form.Limit = f.Limit
	}
	data.Form.Active = f.DIN != "" || f.State != "" || f.Node != "" || !f.Since.IsZero() || !f.Until.IsZero()
	data.Form.Fleet = f.Node != ""

	counters, err := src.Stats()
	if err != nil {
		return p.failErr(w, r, m, storeError("stats", err))
	}
	_, day := Windows(data.Now)
	buckets, err := src.Hourly(day)
	if err != nil {
		return p.failErr(w, r, m, storeError("hourly stats", err))
	}
	data.Stats = Summarize(src.DINs(), counters, buckets, data.Now)
	markCircuits(&data.Stats, src, data.Now)
	data.Tally = tally(data.Stats.Destinations)
	for _, d := range data.Stats.Destinations {
		data.Form.DINs = append(data.Form.DINs, d.DIN)
	}
	data.Chart = NewChart(buckets, f.DIN, data.Now)
	data.ChartFor = f.DIN

	status := http.StatusOK
	if ferr != nil {
		status = http.StatusBadRequest
		data.Flash, data.FlashKind = "Filter not applied: "+ferr.Error(), "error"
	} else {
		items, next, err := src.List(f)
		if err != nil {
			e := storeError("list", err)
			if e.Status >= 500 {
				return p.failErr(w, r, m, e)
			}
			status = e.Status
			data.Flash, data.FlashKind = e.Message, "error"
		}
		for i := range items {
			data.Rows = append(data.Rows, NewDeliveryView(&items[i]))
			data.Form.Fleet = data.Form.Fleet || items[i].Node != ""
		}
		if f.Cursor != "" {
			data.FirstURL = p.listURL(m, f, "")
		}
		if next != "" {
			data.NextURL = p.listURL(m, f, next)
		}
		if f.State == storage.StateFailed || f.State == storage.StateSpooled {
			// A bulk retry acts on this edge's own queue: node is no filter there.
			data.RetryAll = filterValues(f)
			data.RetryAll.Del("node")
		}
		if n := q.Get("retried"); n != "" && data.Flash == "" {
			data.Flash, data.FlashKind = "Deliveries put back for a new attempt: "+clipText(n, 12)+".", "ok"
		}
	}
	if p.CSRF != nil {
		data.CSRFToken = p.CSRF.Token(p.CSRF.Cookie(w, r, m.Base+"/"), m.User, data.Now)
	}
	return p.render(w, r, status, data)
}

// filterValues are f's din, state, node, since and until as query parameters.
func filterValues(f storage.Filter) url.Values {
	q := url.Values{}
	if f.DIN != "" {
		q.Set("din", f.DIN)
	}
	if f.State != "" {
		q.Set("state", string(f.State))
	}
	if f.Node != "" {
		q.Set("node", f.Node)
	}
	if !f.Since.IsZero() {
		q.Set("since", fmtTime(f.Since))
	}
	if !f.Until.IsZero() {
		q.Set("until", fmtTime(f.Until))
	}
	return q
}

// listURL links to the listing with the same filter and the given cursor.
func (p *Page) listURL(m Mount, f storage.Filter, cursor string) string {
	q := filterValues(f)
	if f.Limit != p.pageSize() {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	u := m.Base + "/"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u + "#deliveries"
}

func (p *Page) detail(w http.ResponseWriter, r *http.Request, m Mount, id, flash, kind string, status int) error {
	if !ValidID(id) {
		return p.fail(w, r, m, http.StatusBadRequest, fmt.Sprintf("%q is not a delivery id.", clipText(id, 80)))
	}
	src, err := p.source()
	if err != nil {
		return p.failErr(w, r, m, err)
	}
	d, err := src.Get(id)
	if err != nil {
		e := storeError("delivery "+id, err)
		if e.Status == http.StatusNotFound {
			e.Message = "There is no delivery " + id + ". Records of delivered and spooled deliveries are kept for the retention period only."
		}
		return p.failErr(w, r, m, e)
	}
	data := p.base(m)
	data.View = "detail"
	det := NewDeliveryDetail(&d)
	data.Detail = &det
	if flash == "" && r.URL.Query().Get("retried") == "1" {
		flash, kind = "Delivery queued for a new attempt.", "ok"
	}
	data.Flash, data.FlashKind = flash, kind
	if p.CSRF != nil {
		data.CSRFToken = p.CSRF.Token(p.CSRF.Cookie(w, r, m.Base+"/"), m.User, data.Now)
	}
	return p.render(w, r, status, data)
}

func (p *Page) retry(w http.ResponseWriter, r *http.Request, m Mount, id string) error {
	if !ValidID(id) {
		return p.fail(w, r, m, http.StatusBadRequest, fmt.Sprintf("%q is not a delivery id.", clipText(id, 80)))
	}
	if ok, err := p.checkRetryForm(w, r, m); !ok {
		return err
	}
	src, err := p.source()
	if err != nil {
		return p.failErr(w, r, m, err)
	}
	if _, err := RetryDelivery(src, id, p.now()); err != nil {
		var e *Error
		if errors.As(err, &e) && (e.Status == http.StatusConflict || e.Status == http.StatusNotFound) {
			if e.Status == http.StatusNotFound {
				return p.failErr(w, r, m, e)
			}
			return p.detail(w, r, m, id, "Retry refused: "+e.Message+".", "error", e.Status)
		}
		return p.failErr(w, r, m, err)
	}
	// Post/redirect/get: reloading the result page does not post again.
	http.Redirect(w, r, m.Base+"/deliveries/"+id+"?retried=1", http.StatusSeeOther)
	return nil
}

// checkRetryForm reads a retry button's form and checks its CSRF defences;
// when they refuse it, it has answered the request (ok false, and the
// error of rendering the answer).
func (p *Page) checkRetryForm(w http.ResponseWriter, r *http.Request, m Mount) (ok bool, err error) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if err := r.ParseForm(); err != nil {
		return false, p.fail(w, r, m, http.StatusBadRequest, "The form could not be read.")
	}
	if p.CSRF == nil {
		return false, p.fail(w, r, m, http.StatusForbidden, "Retrying from this page is not enabled.")
	}
	if err := p.CSRF.Check(r, m.User, p.now()); err != nil {
		return false, p.fail(w, r, m, http.StatusForbidden, "Retry refused: "+err.Error()+".")
	}
	return true, nil
}

// retryMatching is the "retry all matching" button: every retryable
// delivery of the list's filter is put back, then the list is shown again
// with how many.
func (p *Page) retryMatching(w http.ResponseWriter, r *http.Request, m Mount) error {
	if ok, err := p.checkRetryForm(w, r, m); !ok {
		return err
	}
	q := url.Values{}
	for _, name := range retryParams {
		if v := r.PostForm.Get(name); v != "" {
			q.Set(name, v)
		}
	}
	f, err := ParseRetryFilter(q, p.now())
	if err != nil {
		return p.failErr(w, r, m, err)
	}
	src, err := p.source()
	if err != nil {
		return p.failErr(w, r, m, err)
	}
	n, err := src.RetryMatching(r.Context(), f, p.now())
	if err != nil {
		return p.failErr(w, r, m, storeError(fmt.Sprintf("bulk retry (%d put back before the error)", n), err))
	}
	f.Limit = p.pageSize()
	back := filterValues(f)
	back.Set("retried", strconv.Itoa(n))
	http.Redirect(w, r, m.Base+"/?"+back.Encode()+"#deliveries", http.StatusSeeOther)
	return nil
}

func (p *Page) failErr(w http.ResponseWriter, r *http.Request, m Mount, err error) error {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Status: http.StatusInternalServerError, Message: err.Error(), Err: err}
	}
	return p.fail(w, r, m, e.Status, e.Message)
}

func (p *Page) fail(w http.ResponseWriter, r *http.Request, m Mount, status int, msg string) error {
	data := p.base(m)
	data.View = "error"
	data.Status = status
	data.Message = msg
	return p.render(w, r, status, data)
}

// render writes the page with headers that keep it out of caches and frames
// and allow only its own nonce-tagged style sheet.
func (p *Page) render(w http.ResponseWriter, r *http.Request, status int, data pageData) error {
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, data); err != nil {
		return fmt.Errorf("render report page: %w", err)
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	// same-origin, not no-referrer: with no-referrer browsers send
	// "Origin: null" on form posts, which the CSRF check refuses.
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'nonce-"+data.Nonce+"'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return nil
	}
	_, err := w.Write(buf.Bytes())
	return err
}

func newNonce() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// localInput formats t for an <input type="datetime-local">, in UTC.
func localInput(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04")
}

func fmtUTC(t any) string {
	switch v := t.(type) {
	case time.Time:
		if v.IsZero() {
			return "–"
		}
		return v.UTC().Format("2006-01-02 15:04:05")
	case *time.Time:
		if v == nil {
			return "–"
		}
		return fmtUTC(*v)
	}
	return ""
}

// agoText is "3m ago" (or "in 3m") relative to now.
func agoText(now time.Time, t any) string {
	var tt time.Time
	switch v := t.(type) {
	case time.Time:
		tt = v
	case *time.Time:
		if v == nil {
			return ""
		}
		tt = *v
	}
	if tt.IsZero() {
		return ""
	}
	if d := tt.Sub(now); d > time.Second {
		return "in " + Age(d)
	}
	return Age(now.Sub(tt)) + " ago"
}

// healthTally is how many destinations are in one health state.
type healthTally struct {
	Health Health
	N      int
}

// tally counts destinations per health, worst first, skipping zeros.
func tally(ds []DestinationStats) []healthTally {
	var out []healthTally
	for _, h := range []Health{HealthFailing, HealthDegraded, HealthOK, HealthIdle} {
		n := 0
		for _, d := range ds {
			if d.Health == h {
				n++
			}
		}
		if n > 0 {
			out = append(out, healthTally{h, n})
		}
	}
	return out
}

type rateArgs struct {
	Label string
	W     Window
}

// rateClass colours a success-rate bar.
func rateClass(r *float64) string {
	switch {
	case r == nil:
		return ""
	case *r >= 0.99:
		return "good"
	case *r >= minOKRate:
		return "warn"
	}
	return "poor"
}

// resultDetail is an attempt's error without the "HTTP <status>" that the
// status pill already shows.
func resultDetail(status int, msg string) string {
	if status != 0 {
		msg = strings.TrimPrefix(msg, "HTTP "+strconv.Itoa(status))
	}
	return strings.TrimSpace(msg)
}

func fmtMS(ms float64) string {
	if ms >= 1000 {
		return strconv.FormatFloat(ms/1000, 'f', 2, 64) + " s"
	}
	return strconv.FormatFloat(ms, 'f', 0, 64) + " ms"
}

// pctWidth is a rate as a 0..100 number for an SVG width.
func pctWidth(r *float64) string {
	if r == nil {
		return "0"
	}
	return strconv.FormatFloat(*r*100, 'f', 1, 64)
}

// shortID keeps the random tail of an id: its head is the creation time,
// which the table shows anyway.
func shortID(id string) string {
	if len(id) <= 12 {
		return id
	}
	return "…" + id[len(id)-10:]
}

// RelPath finds the page's own route at the end of a request path: the
// detail, retry and notifications routes, or else the overview ("/"). Together with the
// original path it gives the page's root, wherever it is mounted.
func RelPath(p string) string {
	if i := strings.LastIndex(p, "/deliveries/"); i >= 0 {
		rest := p[i:]
		parts := strings.Split(rest[1:], "/")
		if len(parts) == 2 && parts[1] != "" || len(parts) == 3 && parts[1] != "" && parts[2] == "retry" {
			return rest
		}
	}
	if strings.HasSuffix(p, "/notifications") {
		return "/notifications"
	}
	return "/"
}
