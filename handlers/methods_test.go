package handlers

import (
	"net/http"
	"slices"
	"strings"
	"testing"
)

func TestMethodPolicyDefaultIsPOST(t *testing.T) {
	for _, in := range [][]string{nil, {}} {
		p, err := ParseMethods(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Allowed(); !slices.Equal(got, []string{"POST"}) {
			t.Errorf("ParseMethods(%q).Allowed() = %q, want [POST]", in, got)
		}
		if d := p.Check("POST"); d != nil {
			t.Errorf("default policy refused POST: %v", d)
		}
		// Neither HEAD nor OPTIONS is implied.
		for _, m := range []string{"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH", "TRACE", "CONNECT", "post", "BREW", ""} {
			d := p.Check(m)
			if d == nil {
				t.Errorf("default policy let %q through", m)
				continue
			}
			if d.Status != http.StatusMethodNotAllowed || d.Reason != ReasonMethod || !slices.Equal(d.Allow, []string{"POST"}) {
				t.Errorf("Check(%q) = %+v, want 405 %q Allow [POST]", m, d, ReasonMethod)
			}
		}
	}
}

func TestMethodPolicyList(t *testing.T) {
	// NATS extended sales accept GET or POST; names are case-insensitive in
	// the config and duplicates collapse.
	p, err := ParseMethods([]string{"get", "POST", "Get", "head"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.Allowed(), []string{"GET", "POST", "HEAD"}; !slices.Equal(got, want) {
		t.Errorf("Allowed() = %q, want %q", got, want)
	}
	for _, m := range []string{"GET", "POST", "HEAD"} {
		if d := p.Check(m); d != nil {
			t.Errorf("Check(%q) = %v, want allowed", m, d)
		}
	}
	for _, m := range []string{"OPTIONS", "PUT", "get"} {
		d := p.Check(m)
		if d == nil {
			t.Errorf("Check(%q) allowed, want 405", m)
			continue
		}
		if !slices.Equal(d.Allow, []string{"GET", "POST", "HEAD"}) {
			t.Errorf("Check(%q).Allow = %q", m, d.Allow)
		}
	}
	// OPTIONS passes only when listed.
	po, err := ParseMethods([]string{"POST", "OPTIONS"})
	if err != nil {
		t.Fatal(err)
	}
	if d := po.Check("OPTIONS"); d != nil {
		t.Errorf("listed OPTIONS refused: %v", d)
	}
}

func TestMethodPolicyAllowedIsACopy(t *testing.T) {
	p, err := ParseMethods([]string{"POST"})
	if err != nil {
		t.Fatal(err)
	}
	p.Allowed()[0] = "GET"
	p.Check("PUT").Allow[0] = "GET"
	if d := p.Check("GET"); d == nil {
		t.Error("changing a returned slice changed the policy")
	}
}

func TestMethodPolicyUnknown(t *testing.T) {
	for _, m := range []string{"BREW", "TRACE", "CONNECT", "", "PO ST", "GET,POST", "*"} {
		_, err := ParseMethods([]string{"POST", m})
		if err == nil {
			t.Errorf("ParseMethods accepted %q", m)
			continue
		}
		if !strings.Contains(err.Error(), `"`+m+`"`) {
			t.Errorf("error %q does not name %q", err, m)
		}
	}
}
