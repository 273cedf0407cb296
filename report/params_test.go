package report

import (
	"errors"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

func TestReportParseFilter(t *testing.T) {
	now := time.Date(2025, 11, 21, 14, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		query string
		want  storage.Filter
	}{
		{"", storage.Filter{Limit: 50}},
		{"din=&state=&since=&until=&limit=&cursor=", storage.Filter{Limit: 50}},
		{"din=1001&state=failed&limit=2&cursor=abc", storage.Filter{DIN: "1001", State: storage.StateFailed, Limit: 2, Cursor: "abc"}},
		{"since=2025-11-20T10:00:00Z&until=2025-11-21T00:00:00%2B01:00",
			storage.Filter{Limit: 50, Since: time.Date(2025, 11, 20, 10, 0, 0, 0, time.UTC), Until: time.Date(2025, 11, 20, 23, 0, 0, 0, time.UTC)}},
		// What an HTML datetime-local input sends, read as UTC.
		{"since=2025-11-20T10:30", storage.Filter{Limit: 50, Since: time.Date(2025, 11, 20, 10, 30, 0, 0, time.UTC)}},
		{"until=2025-11-20", storage.Filter{Limit: 50, Until: time.Date(2025, 11, 20, 0, 0, 0, 0, time.UTC)}},
		{"since=24h", storage.Filter{Limit: 50, Since: now.Add(-24 * time.Hour)}},
		{"limit=1000", storage.Filter{Limit: 1000}},
	} {
		q, _ := url.ParseQuery(tc.query)
		got, err := ParseFilter(q, now, 50)
		if err != nil {
			t.Errorf("%q: %v", tc.query, err)
			continue
		}
		if got != tc.want {
			t.Errorf("%q: got %+v, want %+v", tc.query, got, tc.want)
		}
	}
}

func TestReportParseFilterRejectsMalformed(t *testing.T) {
	now := time.Now()
	for _, query := range []string{
		"din=10%2001", "din=%3Cscript%3E", "din=123456789012345678901234567890123",
		"state=lost", "state=PENDING",
		"since=yesterday", "until=2025-13-01", "since=-5m",
		"since=2025-11-21&until=2025-11-20", "since=2025-11-21&until=2025-11-21",
		"limit=0", "limit=1001", "limit=ten", "limit=-1",
		"stat=failed", "din=1&din=2",
	} {
		q, _ := url.ParseQuery(query)
		_, err := ParseFilter(q, now, 50)
		var e *Error
		if !errors.As(err, &e) || e.Status != http.StatusBadRequest {
			t.Errorf("%q: got %v, want a 400 error", query, err)
		}
	}
	// Extra parameters are allowed when named.
	q, _ := url.ParseQuery("retried=1")
	if _, err := ParseFilter(q, now, 50, "retried"); err != nil {
		t.Errorf("allowed extra parameter: %v", err)
	}
}

func TestReportValidID(t *testing.T) {
	for s, want := range map[string]bool{"0123456789abcdef0123456789abcdef": true, "ab": true, "": false,
		"ABCD": false, "12g4": false, "../x": false, string(make([]byte, 65)): false} {
		if ValidID(s) != want {
			t.Errorf("ValidID(%q) = %v", s, !want)
		}
	}
}

func TestReportStoreErrorStatuses(t *testing.T) {
	for err, want := range map[error]int{
		storage.ErrNotFound:  404,
		storage.ErrBadCursor: 400,
		storage.ErrConflict:  409,
		storage.ErrClosed:    503,
		errBroken:            500,
	} {
		if got := storeError("x", wrap(err)).Status; got != want {
			t.Errorf("%v: status %d, want %d", err, got, want)
		}
	}
}

func wrap(err error) error { return errors.Join(errors.New("context"), err) }
