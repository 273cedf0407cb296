package handlers

import (
	"testing"
	"time"
)

func TestCheckTransTime(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	const maxAge, skew = 15 * time.Minute, 2 * time.Minute
	cases := []struct {
		value  string // "-" for absent
		reason string
	}{
		{"1700000000", ""},
		{"1699999100", ""},                   // exactly max_age old
		{"1699999099", ReasonStale},          // one second more
		{"1700000120", ""},                   // exactly the skew ahead
		{"1700000121", ReasonFuture},         // one second more
		{"1700000000000", ReasonTimeMissing}, // milliseconds: not a plausible Unix time
		{"-", ReasonTimeMissing},
		{"", ReasonTimeMissing},
		{" 1700000000", ReasonTimeMissing},
		{"+1700000000", ReasonTimeMissing},
		{"-1700000000", ReasonTimeMissing},
		{"1700000000.5", ReasonTimeMissing},
		{"0x6553F100", ReasonTimeMissing},
		{"0", ReasonStale},
		{"999999999999", ReasonFuture},
	}
	for _, tc := range cases {
		body := "ctransaction=SALE"
		if tc.value != "-" {
			body += "&ctranstime=" + tc.value
		}
		err := CheckTransTime(formOf(t, body), "ctranstime", maxAge, skew, now)
		if got := denialReason(err); got != tc.reason {
			t.Errorf("transtime %q: %v, want %q", tc.value, err, tc.reason)
		}
		if tc.reason != "" && denialStatus(err) != 403 {
			t.Errorf("transtime %q: status %d, want 403", tc.value, denialStatus(err))
		}
	}
	// max_age unset: nothing is required.
	if err := CheckTransTime(formOf(t, "a=1"), "ctranstime", 0, skew, now); err != nil {
		t.Fatalf("disabled check refused: %v", err)
	}
}
