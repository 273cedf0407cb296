package report

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

// notificationParams are what GET /postback/notifications and the page's
// notifications view filter on.
var notificationParams = []string{"outcome", "path", "label", "delivery", "since", "until", "limit", "cursor"}

// ParseNotificationFilter reads a notifications listing's filter from q.
func ParseNotificationFilter(q url.Values, now time.Time, defaultLimit int) (storage.NotificationFilter, error) {
	f := storage.NotificationFilter{Limit: defaultLimit}
	if err := checkParams(q, notificationParams); err != nil {
		return f, err
	}
	if v := q.Get("outcome"); v != "" {
		if !slices.Contains(storage.Outcomes, v) {
			return f, badRequest("outcome %q: want %s", v, strings.Join(storage.Outcomes, ", "))
		}
		f.Outcome = v
	}
	for name, dst := range map[string]*string{"path": &f.Path, "label": &f.Label} {
		if v := q.Get(name); len(v) > 512 {
			return f, badRequest("%s: too long", name)
		} else {
			*dst = v
		}
	}
	if v := q.Get("delivery"); v != "" {
		if !ValidID(v) {
			return f, badRequest("delivery %q: not a delivery id", clipText(v, 80))
		}
		f.Delivery = v
	}
	var err error
	if f.Since, f.Until, err = parseRange(q, now); err != nil {
		return f, err
	}
	if f.Delivery != "" && f.Since.IsZero() && f.Until.IsZero() {
		// A delivery is written while its notification is handled: its id's
		// time bounds the search to a minute either side.
		if at, ok := idTime(f.Delivery); ok {
			f.Since, f.Until = at.Add(-time.Minute), at.Add(time.Minute)
		}
	}
	f.Limit, f.Cursor, err = parsePage(q, f.Limit)
	return f, err
}

// idTime is the creation time a delivery id begins with.
func idTime(id string) (time.Time, bool) {
	if len(id) < 16 {
		return time.Time{}, false
	}
	ns, err := strconv.ParseUint(id[:16], 16, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, int64(ns)).UTC(), true
}

// NotificationList is the JSON of GET /postback/notifications.
type NotificationList struct {
	Notifications []storage.Notification `json:"notifications"`
	NextCursor    string                 `json:"next_cursor,omitempty"`
}

func (a *API) notifications(w http.ResponseWriter, r *http.Request) error {
	src, err := a.source()
	if err != nil {
		return err
	}
	f, err := ParseNotificationFilter(r.URL.Query(), a.now(), DefaultLimit)
	if err != nil {
		return err
	}
	items, next, err := src.Notifications(f)
	if err != nil {
		return storeError("notifications", err)
	}
	if items == nil {
		items = []storage.Notification{}
	}
	return writeJSON(w, http.StatusOK, NotificationList{Notifications: items, NextCursor: next})
}

// notificationForm is the notifications view's filter bar.
type notificationForm struct {
	Outcome, Path, Label, Delivery string
	Since, Until                   string
	Outcomes                       []string
	Active                         bool
}

func (p *Page) notifications(w http.ResponseWriter, r *http.Request, m Mount) error {
	data := p.base(m)
	data.View = "notifications"
	src, err := p.source()
	if err != nil {
		return p.failErr(w, r, m, err)
	}
	pageSize := p.pageSize()
	q := r.URL.Query()
	form := notificationForm{Outcome: q.Get("outcome"), Path: q.Get("path"), Label: q.Get("label"), Delivery: q.Get("delivery"),
		Since: q.Get("since"), Until: q.Get("until"), Outcomes: storage.Outcomes}
	f, ferr := ParseNotificationFilter(q, data.Now, pageSize)
	status := http.StatusOK
	if ferr != nil {
		status = http.StatusBadRequest
		data.Flash, data.FlashKind = "Filter not applied: "+ferr.Error(), "error"
	} else {
		form.Since, form.Until = localInput(f.Since), localInput(f.Until)
		items, next, err := src.Notifications(f)
		if err != nil {
			e := storeError("notifications", err)
			if e.Status >= 500 {
				return p.failErr(w, r, m, e)
			}
			status = e.Status
			data.Flash, data.FlashKind = e.Message, "error"
		}
		data.Notes = items
		if f.Cursor != "" {
			data.FirstURL = notificationsURL(m, q, "")
		}
		if next != "" {
			data.NextURL = notificationsURL(m, q, next)
		}
	}
	form.Active = form.Outcome != "" || form.Path != "" || form.Label != "" || form.Delivery != "" || form.Since != "" || form.Until != ""
	data.NoteForm = form
	return p.render(w, r, status, data)
}

// notificationsURL links to the view with q's filter and the cursor.
func notificationsURL(m Mount, q url.Values, cursor string) string {
	q2 := url.Values{}
	for k, v := range q {
		if k != "cursor" && len(v) > 0 && v[0] != "" {
			q2.Set(k, v[0])
		}
	}
	if cursor != "" {
		q2.Set("cursor", cursor)
	}
	u := m.Base + "/notifications"
	if len(q2) > 0 {
		u += "?" + q2.Encode()
	}
	return u
}
