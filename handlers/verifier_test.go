package handlers

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestVerifierConfigCheckOptions(t *testing.T) {
	ok := []VerifierConfig{
		{},
		{Format: FormatForm, Algorithm: "v1", Prefix: "c", MaxAge: time.Minute},
		{Format: FormatClickBankJSON, MaxAge: time.Minute, FutureSkew: time.Second},
		{Algorithm: AlgorithmNameDigistore24, MaxFields: 50},
	}
	for _, c := range ok {
		if err := c.CheckOptions(); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
	bad := map[string]VerifierConfig{
		"unknown format":           {Format: "xml"},
		"unknown algorithm":        {Algorithm: "sha256"},
		"json with a prefix":       {Format: FormatClickBankJSON, Prefix: "c"},
		"json with v1":             {Format: FormatClickBankJSON, Algorithm: "v1"},
		"json with sorted":         {Format: FormatClickBankJSON, Algorithm: "sorted"},
		"json with max_fields":     {Format: FormatClickBankJSON, MaxFields: 10},
		"digistore24 with prefix":  {Algorithm: AlgorithmNameDigistore24, Prefix: "c"},
		"digistore24 with max_age": {Algorithm: AlgorithmNameDigistore24, MaxAge: time.Minute},
		"future_skew alone":        {FutureSkew: time.Minute},
		"bad prefix":               {Prefix: "c-"},
		"negative max_age":         {MaxAge: -1},
	}
	for name, c := range bad {
		err := c.CheckOptions()
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if _, err := NewVerifier(VerifierConfig{Format: c.Format, Algorithm: c.Algorithm, Prefix: c.Prefix, MaxAge: c.MaxAge, FutureSkew: c.FutureSkew,
			MaxFields: c.MaxFields, Secrets: [][]byte{[]byte("k")}}); err == nil {
			t.Errorf("%s: NewVerifier accepted", name)
		}
	}
	if err := (VerifierConfig{Algorithm: "sha256"}).CheckOptions(); !strings.Contains(err.Error(), `unknown ITNS algorithm "sha256"`) {
		t.Errorf("message %q", err)
	}
	if err := (VerifierConfig{Algorithm: AlgorithmNameDigistore24, MaxAge: time.Minute}).CheckOptions(); !strings.Contains(err.Error(), "max_age") {
		t.Errorf("message %q", err)
	}
}

func TestNewVerifierChooses(t *testing.T) {
	secrets := [][]byte{[]byte("k")}
	for _, tc := range []struct {
		cfg  VerifierConfig
		want string
	}{
		{VerifierConfig{Secrets: secrets}, "handlers.itnsVerifier"},
		{VerifierConfig{Secrets: secrets, Format: FormatClickBankJSON}, "*handlers.ClickBankJSON"},
		{VerifierConfig{Secrets: secrets, Algorithm: AlgorithmNameDigistore24}, "*handlers.Digistore24"},
	} {
		v, err := NewVerifier(tc.cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := typeName(v); got != tc.want {
			t.Errorf("%+v: %s, want %s", tc.cfg, got, tc.want)
		}
	}
	if _, err := NewVerifier(VerifierConfig{}); err == nil {
		t.Error("no secrets accepted")
	}
	// The form verifier reports what ITNS.Check does, and the same replay key.
	it := mustITNS(t, ITNSConfig{Secrets: secrets, Prefix: "c"})
	body := "ctransaction=SALE&cverify=" + it.Sign(formOf(t, "ctransaction=SALE"), secrets[0])
	n, err := it.Verifier().Check("application/x-www-form-urlencoded", []byte(body), time.Now())
	if err != nil || n.SecretIndex != 0 || n.Fields != 2 || string(n.ReplayKey()) != string(ReplayKey(formOf(t, body))) {
		t.Fatalf("%+v, %v", n, err)
	}
}

func typeName(v any) string { return fmt.Sprintf("%T", v) }
