package alert

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestBodyShape(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 30, 0, 0, time.FixedZone("CET", 3600))
	a := Alert{Event: Event{Kind: PendingTooOld, DIN: "1001", At: at, OldestPending: at.Add(-90 * time.Minute)}, Count: 4, First: at.Add(-9 * time.Minute)}
	data, err := a.JSON("edge-a")
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"event": "pending_too_old", "din": "1001", "node": "edge-a", "at": "2026-03-01T11:30:00Z",
		"count": 4.0, "first_at": "2026-03-01T11:21:00Z", "oldest_pending": "2026-03-01T10:00:00Z", "pending_for": "1h30m0s",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (%s)", k, got[k], v, data)
		}
	}
	text, _ := got["text"].(string)
	for _, s := range []string{"edge-a", "destination 1001", "1h30m0s", "4 times"} {
		if !strings.Contains(text, s) {
			t.Errorf("text %q lacks %q", text, s)
		}
	}
	if _, ok := got["error"]; ok {
		t.Errorf("empty error is in the body: %s", data)
	}
}

// Every kind has a sentence of its own, and the store's error is bounded.
func TestBodyTextPerKind(t *testing.T) {
	seen := map[string]Kind{}
	for _, k := range Kinds {
		b := Alert{Event: Event{Kind: k, DIN: "1001", At: time.Now(), Error: strings.Repeat("x", 1000)}, Count: 1}.Body("n")
		if b.Text == "" || strings.Contains(b.Text, string(k)) {
			t.Errorf("%s: text %q", k, b.Text)
		}
		if prev, dup := seen[b.Text]; dup {
			t.Errorf("%s and %s share the text %q", k, prev, b.Text)
		}
		seen[b.Text] = k
		if len(b.Error) > maxErrorText+len("…") {
			t.Errorf("%s: error of %d bytes", k, len(b.Error))
		}
	}
}
