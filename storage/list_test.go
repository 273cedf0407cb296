package storage

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"
)

func TestListPaginationAndFilters(t *testing.T) {
	clk := newTestClock()
	s := openQueue(t, Options{Clock: clk.Now})
	var all []Delivery
	for i := range 25 {
		clk.Add(time.Second)
		d := enqueueOne(t, s, []string{"10", "100"}[i%2], fmt.Sprint(i))
		if i%5 == 0 {
			d = mustComplete(t, s, d.ID, Attempt{Status: 200}, Outcome{State: StateDelivered})
		}
		all = append(all, d)
	}
	newestFirst := func(ds []Delivery) []string {
		var out []string
		for i := len(ds) - 1; i >= 0; i-- {
			out = append(out, ds[i].ID)
		}
		return out
	}
	page := func(f Filter) []string {
		var got []string
		for range 100 {
			items, next, err := s.List(f)
			if err != nil {
				t.Fatal(err)
			}
			if len(items) > f.Limit && f.Limit > 0 {
				t.Fatalf("page of %d > limit %d", len(items), f.Limit)
			}
			got = append(got, ids(items)...)
			if next == "" {
				return got
			}
			f.Cursor = next
		}
		t.Fatal("pagination does not end")
		return nil
	}
	if got, want := page(Filter{Limit: 10}), newestFirst(all); !reflect.DeepEqual(got, want) {
		t.Fatalf("all pages =\n%v\nwant\n%v", got, want)
	}
	var din10, delivered, din100pending []Delivery
	for i, d := range all {
		if d.DIN == "10" {
			din10 = append(din10, d)
		}
		if d.State == StateDelivered {
			delivered = append(delivered, d)
		}
		if d.DIN == "100" && d.State == StatePending {
			din100pending = append(din100pending, d)
		}
		_ = i
	}
	if got, want := page(Filter{DIN: "10", Limit: 4}), newestFirst(din10); !reflect.DeepEqual(got, want) {
		t.Fatalf("DIN 10 = %v, want %v", got, want)
	}
	if got, want := page(Filter{State: StateDelivered, Limit: 2}), newestFirst(delivered); !reflect.DeepEqual(got, want) {
		t.Fatalf("delivered = %v, want %v", got, want)
	}
	if got, want := page(Filter{DIN: "100", State: StatePending, Limit: 3}), newestFirst(din100pending); !reflect.DeepEqual(got, want) {
		t.Fatalf("100 pending = %v, want %v", got, want)
	}
	// Since inclusive, Until exclusive, on creation time.
	got := page(Filter{Since: all[5].Created, Until: all[9].Created, Limit: 50})
	if want := newestFirst(all[5:9]); !reflect.DeepEqual(got, want) {
		t.Fatalf("since/until = %v, want %v", got, want)
	}
	items, _, err := s.List(Filter{})
	if err != nil || len(items) != 25 {
		t.Fatalf("default limit page = %d, %v", len(items), err)
	}
	if !reflect.DeepEqual(items[0], all[24]) {
		t.Fatalf("List item = %+v, want %+v", items[0], all[24])
	}
	for _, bad := range []string{"!!", "AAAA", encodeCursor(id{})[:10]} {
		if _, _, err := s.List(Filter{Cursor: bad}); !errors.Is(err, ErrBadCursor) {
			t.Fatalf("cursor %q: %v, want ErrBadCursor", bad, err)
		}
	}
}
