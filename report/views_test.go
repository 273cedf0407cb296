package report

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

func TestReportNewDeliveryView(t *testing.T) {
	t0 := time.Date(2025, 11, 21, 10, 0, 0, 0, time.FixedZone("CET", 3600))
	a500 := storage.Attempt{At: t0, Status: 500, Error: "HTTP 500 Internal Server Error", Duration: 1500 * time.Microsecond}
	aNet := storage.Attempt{At: t0.Add(time.Minute), Error: "timeout after 15s", Duration: 15 * time.Second}
	a200 := storage.Attempt{At: t0.Add(2 * time.Minute), Status: 200, Duration: 20 * time.Millisecond}

	pending := storage.Delivery{ID: "aa", DIN: "1", State: storage.StatePending, Created: t0, Updated: t0,
		NextAttempt: t0.Add(time.Hour), Attempts: []storage.Attempt{a500}, LastError: "HTTP 500 Internal Server Error", HasPayload: true, Size: 10}
	v := NewDeliveryView(&pending)
	if v.Attempts != 1 || v.LastStatus != 500 || v.LastError != "HTTP 500 Internal Server Error" || v.Reason != "" ||
		v.NextAttempt == nil || !v.NextAttempt.Equal(t0.Add(time.Hour)) || v.Retryable || v.Created.Location() != time.UTC {
		t.Errorf("pending view: %+v", v)
	}

	failed := storage.Delivery{ID: "bb", State: storage.StateFailed, Created: t0, Attempts: []storage.Attempt{a500, aNet},
		LastError: "retry schedule exhausted after 2 attempts", HasPayload: true, NextAttempt: t0}
	v = NewDeliveryView(&failed)
	if v.LastError != "timeout after 15s" || v.Reason != "retry schedule exhausted after 2 attempts" || v.LastStatus != 0 ||
		v.NextAttempt != nil || !v.Retryable {
		t.Errorf("failed view: %+v", v)
	}

	delivered := storage.Delivery{ID: "cc", State: storage.StateDelivered, Attempts: []storage.Attempt{a500, a200}, LastError: "HTTP 500"}
	v = NewDeliveryView(&delivered)
	if v.LastError != "" || v.Reason != "" || v.LastStatus != 200 || v.Retryable {
		t.Errorf("delivered view: %+v", v)
	}

	retried := failed
	retried.State, retried.NextAttempt = storage.StatePending, t0
	if v = NewDeliveryView(&retried); v.Reason != "" || v.LastError != "timeout after 15s" || v.Retryable {
		t.Errorf("retried view: %+v", v)
	}

	spoolErr := storage.Delivery{ID: "dd", State: storage.StateFailed, LastError: "spool: disk full", HasPayload: true}
	if v = NewDeliveryView(&spoolErr); v.LastError != "spool: disk full" || v.LastAttemptAt != nil {
		t.Errorf("failed without attempts: %+v", v)
	}
	spooled := storage.Delivery{ID: "ee", State: storage.StateSpooled, SpoolFile: "/srv/x.asc"}
	if NewDeliveryView(&spooled).Retryable {
		t.Error("spooled without payload must not be retryable")
	}
	spooled.HasPayload = true
	if !NewDeliveryView(&spooled).Retryable {
		t.Error("spooled with payload must be retryable")
	}

	det := NewDeliveryDetail(&failed)
	if len(det.History) != 2 || det.History[0].N != 1 || det.History[0].Status != 500 || det.History[0].DurationMS != 1.5 ||
		det.History[0].OK || det.History[1].Error != "timeout after 15s" || det.History[1].DurationMS != 15000 {
		t.Errorf("history: %+v", det.History)
	}
	if h := NewDeliveryDetail(&delivered).History; !h[1].OK {
		t.Errorf("a 200 attempt is OK: %+v", h[1])
	}
}

func TestReportDeliveryJSONIsSnakeCaseWithoutPayload(t *testing.T) {
	d := storage.Delivery{ID: "aa", DIN: "1001", State: storage.StatePending, Created: time.Unix(0, 0), NextAttempt: time.Unix(60, 0),
		Attempts: []storage.Attempt{{At: time.Unix(1, 0), Status: 503, Error: "HTTP 503"}}, ContentType: "text/plain", Size: 3, HasPayload: true}
	b, err := json.Marshal(NewDeliveryDetail(&d))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "din", "state", "created", "updated", "attempts", "next_attempt", "last_attempt_at",
		"last_status", "last_error", "content_type", "size", "has_payload", "retryable", "attempt_history"} {
		if _, ok := m[k]; !ok {
			t.Errorf("key %q missing from %s", k, b)
		}
	}
	for k := range m {
		if strings.ToLower(k) != k || strings.Contains(k, "payload") && k != "has_payload" {
			t.Errorf("unexpected key %q", k)
		}
	}
	hist := m["attempt_history"].([]any)[0].(map[string]any)
	for _, k := range []string{"n", "at", "status", "error", "duration_ms", "ok"} {
		if _, ok := hist[k]; !ok {
			t.Errorf("attempt key %q missing: %v", k, hist)
		}
	}
}
