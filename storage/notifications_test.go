package storage

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestNotificationsAppendListFilterPage(t *testing.T) {
	clock := newTestClock()
	dir := t.TempDir()
	s := openQueue(t, Options{Dir: dir, Clock: clock.Now})
	base := clock.Now()
	var batch []Notification
	for i := range 30 {
		n := Notification{At: base.Add(time.Duration(i) * time.Second), Host: "shop.example", Path: "/ipn.php", Method: "POST",
			IP: "127.0.0.1", Outcome: OutcomeAccepted, Status: 200, Labels: map[string]string{"ctransreceipt": fmt.Sprintf("R%02d", i)}}
		if i%3 == 0 {
			n.Outcome, n.Reason, n.Status, n.Path = OutcomeRefused, "ip_not_allowed", 403, "/other.php"
		}
		if i == 7 {
			n.Deliveries = []string{"d7a", "d7b"}
		}
		batch = append(batch, n)
	}
	if err := s.AppendNotifications(batch); err != nil {
		t.Fatal(err)
	}
	if batch[0].ID == "" || batch[0].ID == batch[1].ID {
		t.Fatalf("ids %q %q: want one each", batch[0].ID, batch[1].ID)
	}

	all, cur, err := s.Notifications(NotificationFilter{Limit: 100})
	if err != nil || len(all) != 30 || cur != "" {
		t.Fatalf("all: %d, cursor %q, %v", len(all), cur, err)
	}
	if all[0].Labels["ctransreceipt"] != "R29" || !all[0].At.After(all[1].At) {
		t.Errorf("not newest first: %+v, %+v", all[0], all[1])
	}
	for _, c := range []struct {
		name string
		f    NotificationFilter
		want int
	}{
		{"outcome", NotificationFilter{Outcome: OutcomeRefused}, 10},
		{"path", NotificationFilter{Path: "/ipn.php"}, 20},
		{"label value", NotificationFilter{Label: "R07"}, 1},
		{"label field=value", NotificationFilter{Label: "ctransreceipt=R08"}, 1},
		{"label other field", NotificationFilter{Label: "ctransaction=R08"}, 0},
		{"delivery", NotificationFilter{Delivery: "d7b"}, 1},
		{"since until", NotificationFilter{Since: base.Add(10 * time.Second), Until: base.Add(20 * time.Second)}, 10},
	} {
		got, _, err := s.Notifications(c.f)
		if err != nil || len(got) != c.want {
			t.Errorf("%s: %d, %v; want %d", c.name, len(got), err, c.want)
		}
	}

	// Pages of 7 walk every record once.
	seen := map[string]bool{}
	f := NotificationFilter{Limit: 7}
	for range 10 {
		page, next, err := s.Notifications(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range page {
			if seen[n.ID] {
				t.Fatalf("%s twice", n.ID)
			}
			seen[n.ID] = true
		}
		if next == "" {
			break
		}
		f.Cursor = next
	}
	if len(seen) != 30 {
		t.Errorf("paged through %d, want 30", len(seen))
	}

	if _, _, err := s.Notifications(NotificationFilter{Outcome: "maybe"}); err == nil {
		t.Error("unknown outcome accepted")
	}
	if err := s.AppendNotifications([]Notification{{At: base, Outcome: "maybe"}}); !errors.Is(err, ErrBadNotification) {
		t.Errorf("bad outcome: %v", err)
	}

	// Kept across a reopen (Close flushes), purged after the retention.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openQueue(t, Options{Dir: dir, Clock: clock.Now, Retention: time.Hour})
	if got, _, _ := s.Notifications(NotificationFilter{Limit: 100}); len(got) != 30 {
		t.Fatalf("after reopen: %d, want 30", len(got))
	}
	if _, err := s.Purge(base.Add(time.Hour + 15*time.Second)); err != nil {
		t.Fatal(err)
	}
	got, _, _ := s.Notifications(NotificationFilter{Limit: 100})
	if len(got) != 15 || got[len(got)-1].Labels["ctransreceipt"] != "R15" {
		t.Errorf("after purge: %d left (oldest %+v), want the 15 made from the cutoff on", len(got), got[len(got)-1])
	}
}
