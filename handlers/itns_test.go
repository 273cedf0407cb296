package handlers

import (
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"
)

// refSignature is a deliberately naive second implementation of DESIGN.md
// "The ITNS / ClickBank signature", used to check the optimised one.
func refSignature(fields map[string]string, prefix, secret string, v1 bool) string {
	var names []string
	if v1 {
		for _, n := range strings.Fields("custname custemail custcc custstate transreceipt proditem transaction transaffiliate transpublisher prodtype prodtitle transpaymentmethod transamount affitid vendthru") {
			names = append(names, prefix+n)
		}
	} else {
		for n := range fields {
			if n != prefix+"verify" {
				names = append(names, n)
			}
		}
		sort.Strings(names)
	}
	var s string
	for _, n := range names {
		s += fields[n] + "|"
	}
	sum := sha1.Sum([]byte(s + secret))
	return strings.ToUpper(hex.EncodeToString(sum[:])[:8])
}

func mustITNS(t testing.TB, cfg ITNSConfig) *ITNS {
	t.Helper()
	v, err := NewITNS(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func formOf(t testing.TB, body string) Form {
	t.Helper()
	f, err := ParseForm([]byte(body))
	if err != nil {
		t.Fatalf("ParseForm(%q): %v", body, err)
	}
	return f
}

func denialReason(err error) string {
	var d *Denial
	if errors.As(err, &d) {
		return d.Reason
	}
	return ""
}

func denialStatus(err error) int {
	var d *Denial
	if errors.As(err, &d) {
		return d.Status
	}
	return 0
}

func TestITNSSignatureKnownVectors(t *testing.T) {
	// Expected values from `printf 'a|b|c|secret' | sha1sum`.
	v := mustITNS(t, ITNSConfig{Secrets: [][]byte{[]byte("secret")}})
	if got := v.Sign(formOf(t, "z=c&x=a&y=b"), []byte("secret")); got != "A6B9AFF5" {
		t.Errorf("sorted: got %s, want A6B9AFF5", got)
	}
	// Empty values count, spaces are kept: names a,b,c,d sorted -> "", "", " lead", "trail ".
	if got := v.Sign(formOf(t, "d=trail+&c=+lead&b=&a"), []byte("secret")); got != "082074E5" {
		t.Errorf("empty and spaced values: got %s, want 082074E5", got)
	}
}

func TestITNSSignatureEdgeValues(t *testing.T) {
	cases := []struct {
		name string
		body string // without the signature
	}{
		{"empty values", "ccustname=&ccustemail=&ctransaction=SALE"},
		{"no equals sign", "ccustname&ctransaction=SALE"},
		{"leading and trailing spaces", "ccustname=+John+Doe+&ccustemail=%20a%40b.example%20"},
		{"percent 40 inside a value", "ccustemail=john%40example.com&cnote=literal%2540"},
		{"ampersand and equals inside a value", "cprodtitle=Tom+%26+Jerry&cnote=a%3Db%26c%3Dd"},
		{"en dash", "cprodtitle=Guide+%E2%80%93+2nd+edition"},
		{"umlauts", "ccustname=J%C3%BCrgen+M%C3%BCller&ccustcity=K%C3%B6ln&cnote=%C3%84%C3%96%C3%9C%C3%9F"},
		{"pipe inside a value", "cnote=a%7Cb&cz=%7C"},
		{"semicolon inside a value", "cnote=a;b&cx=1"},
		{"plus and percent", "cnote=1%2B1%3D2+100%25"},
	}
	for _, tc := range cases {
		for _, alg := range []Algorithm{AlgorithmSorted, AlgorithmV1} {
			t.Run(tc.name+"/"+alg.String(), func(t *testing.T) {
				v := mustITNS(t, ITNSConfig{Secrets: [][]byte{[]byte("MYSECRET")}, Prefix: "c", Algorithm: alg})
				form := formOf(t, tc.body)
				m := map[string]string{}
				for _, f := range form {
					m[f.Name] = f.Value
				}
				want := refSignature(m, "c", "MYSECRET", alg == AlgorithmV1)
				if got := v.Sign(form, []byte("MYSECRET")); got != want {
					t.Fatalf("Sign = %s, reference %s", got, want)
				}
				for _, sig := range []string{want, strings.ToLower(want)} {
					signed := formOf(t, tc.body+"&cverify="+sig)
					if idx, err := v.Verify(signed); err != nil || idx != 0 {
						t.Fatalf("Verify(%s) = %d, %v", sig, idx, err)
					}
				}
			})
		}
	}
}

func TestITNSV1FieldList(t *testing.T) {
	want := "ccustname ccustemail ccustcc ccuststate ctransreceipt cproditem ctransaction ctransaffiliate ctranspublisher cprodtype cprodtitle ctranspaymentmethod ctransamount caffitid cvendthru"
	if got := strings.Join(V1Fields("c"), " "); got != want {
		t.Fatalf("V1Fields(c) = %s", got)
	}
	v := mustITNS(t, ITNSConfig{Secrets: [][]byte{[]byte("K")}, Prefix: "c", Algorithm: AlgorithmV1})
	// Every listed field, in list order (not sorted), each followed by '|'.
	vals := url.Values{}
	var payload string
	for i, n := range V1Fields("c") {
		val := string(rune('A' + i))
		vals.Set(n, val)
		payload += val + "|"
	}
	sum := sha1.Sum([]byte(payload + "K"))
	wantSig := strings.ToUpper(hex.EncodeToString(sum[:4]))
	form := formOf(t, vals.Encode())
	if got := v.Sign(form, []byte("K")); got != wantSig {
		t.Fatalf("v1 Sign = %s, want %s", got, wantSig)
	}
	// Fields outside the list are not signed: adding one keeps the signature.
	extra := formOf(t, vals.Encode()+"&cextra=whatever&cverify="+wantSig)
	if _, err := v.Verify(extra); err != nil {
		t.Fatalf("v1 with an unlisted field: %v", err)
	}
	// A missing listed field counts as empty.
	vals.Del("cvendthru")
	sum = sha1.Sum([]byte(strings.TrimSuffix(payload, "O|") + "|K"))
	if got, want := v.Sign(formOf(t, vals.Encode()), []byte("K")), strings.ToUpper(hex.EncodeToString(sum[:4])); got != want {
		t.Fatalf("v1 with a missing field: %s, want %s", got, want)
	}
}

func TestITNSVerifyRefusals(t *testing.T) {
	v := mustITNS(t, ITNSConfig{Secrets: [][]byte{[]byte("s1")}})
	base := "transaction=SALE&custemail=a%40b.example&transtime=1700000000"
	sig := v.Sign(formOf(t, base), []byte("s1"))
	cases := []struct {
		body, reason string
	}{
		{base, ReasonSignatureMissing},
		{base + "&verify=", ReasonSignatureMismatch},
		{base + "&verify=" + sig[:7], ReasonSignatureMismatch},
		{base + "&verify=" + sig + "0", ReasonSignatureMismatch},
		{base + "&verify=00000000", ReasonSignatureMismatch},
		{strings.Replace(base, "SALE", "RFND", 1) + "&verify=" + sig, ReasonSignatureMismatch},
		// The names are not signed, but the values in name order are:
		// swapping two values changes the signature.
		{"transaction=a%40b.example&custemail=SALE&transtime=1700000000&verify=" + sig, ReasonSignatureMismatch},
		// A prefix changes the signature field: cverify is just another field.
		{base + "&cverify=" + sig, ReasonSignatureMissing},
	}
	for _, tc := range cases {
		_, err := v.Verify(formOf(t, tc.body))
		if got := denialReason(err); got != tc.reason {
			t.Errorf("%s: reason %q (%v), want %q", tc.body, got, err, tc.reason)
		}
		if denialStatus(err) != http.StatusForbidden {
			t.Errorf("%s: status %d, want 403", tc.body, denialStatus(err))
		}
	}
	if _, err := v.Verify(formOf(t, base+"&verify="+sig)); err != nil {
		t.Fatalf("genuine refused: %v", err)
	}
}

func TestITNSRotation(t *testing.T) {
	old, cur := []byte("old-secret"), []byte("new-secret")
	v := mustITNS(t, ITNSConfig{Secrets: [][]byte{cur, old}, Prefix: "c"})
	body := "ctransaction=SALE&ctransreceipt=ABCD1234"
	for want, secret := range [][]byte{cur, old} {
		form := formOf(t, body+"&cverify="+v.Sign(formOf(t, body), secret))
		idx, err := v.Verify(form)
		if err != nil || idx != want {
			t.Fatalf("secret %d: Verify = %d, %v", want, idx, err)
		}
	}
	form := formOf(t, body+"&cverify="+v.Sign(formOf(t, body), []byte("other")))
	if _, err := v.Verify(form); denialReason(err) != ReasonSignatureMismatch {
		t.Fatalf("unknown secret: %v", err)
	}
}

func TestNewITNSRejects(t *testing.T) {
	bad := []ITNSConfig{
		{},
		{Secrets: [][]byte{[]byte("a"), {}}},
		{Secrets: [][]byte{[]byte("a")}, Prefix: "c-"},
		{Secrets: [][]byte{[]byte("a")}, Prefix: "c "},
		{Secrets: [][]byte{[]byte("a")}, Algorithm: 7},
		{Secrets: [][]byte{[]byte("a")}, MaxAge: -time.Second},
	}
	for i, cfg := range bad {
		if _, err := NewITNS(cfg); err == nil {
			t.Errorf("config %d accepted", i)
		}
	}
	for _, s := range []string{"", "sorted", "v1"} {
		if _, err := ParseAlgorithm(s); err != nil {
			t.Errorf("ParseAlgorithm(%q): %v", s, err)
		}
	}
	if _, err := ParseAlgorithm("v2"); err == nil {
		t.Error("ParseAlgorithm(v2) accepted")
	}
}

func TestITNSCheck(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	v := mustITNS(t, ITNSConfig{Secrets: [][]byte{[]byte("k")}, Prefix: "c", MaxAge: 15 * time.Minute})
	sign := func(body string) string {
		return body + "&cverify=" + v.Sign(formOf(t, body), []byte("k"))
	}
	const ct = "application/x-www-form-urlencoded"
	fresh := sign("ctransaction=SALE&ctranstime=1700000000")
	cases := []struct {
		name, ct, body, reason string
		status                 int
	}{
		{"genuine", ct, fresh, "", 0},
		{"genuine with charset", ct + "; charset=UTF-8", fresh, "", 0},
		{"content type case", "Application/X-WWW-Form-URLEncoded", fresh, "", 0},
		{"no content type", "", fresh, ReasonContentType, 400},
		{"json", "application/json", fresh, ReasonContentType, 400},
		{"multipart", "multipart/form-data; boundary=x", fresh, ReasonContentType, 400},
		{"bad escape", ct, fresh + "&x=%zz", ReasonMalformed, 400},
		{"duplicate", ct, fresh + "&ctransaction=SALE", ReasonDuplicateField, 400},
		{"unsigned", ct, "ctransaction=SALE&ctranstime=1700000000", ReasonSignatureMissing, 403},
		{"tampered", ct, strings.Replace(fresh, "SALE", "RFND", 1), ReasonSignatureMismatch, 403},
		{"stale", ct, sign("ctransaction=SALE&ctranstime=1699999000"), ReasonStale, 403},
		{"future", ct, sign("ctransaction=SALE&ctranstime=1700000600"), ReasonFuture, 403},
		{"within skew", ct, sign("ctransaction=SALE&ctranstime=1700000100"), "", 0},
		{"time missing", ct, sign("ctransaction=SALE"), ReasonTimeMissing, 403},
		{"time not a number", ct, sign("ctransaction=SALE&ctranstime=yesterday"), ReasonTimeMissing, 403},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			form, idx, err := v.Check(tc.ct, []byte(tc.body), now)
			if tc.reason == "" {
				if err != nil || idx != 0 || form == nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if denialReason(err) != tc.reason || denialStatus(err) != tc.status {
				t.Fatalf("got %v (reason %q, status %d), want %s %d", err, denialReason(err), denialStatus(err), tc.reason, tc.status)
			}
		})
	}
}

func TestITNSSignForm(t *testing.T) {
	v := mustITNS(t, ITNSConfig{Secrets: [][]byte{[]byte("k")}, Prefix: "c"})
	fields := []Field{{"ctransaction", "SALE"}, {"ccustemail", "a@b.example"}, {"cprodtitle", "Tom & Jerry – Müller"}}
	body, err := v.SignForm(fields)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(body, "ctransaction=SALE&ccustemail=a%40b.example&cprodtitle=Tom+%26+Jerry+%E2%80%93+M%C3%BCller&cverify=") {
		t.Fatalf("body %s: order or encoding not kept", body)
	}
	if _, _, err := v.Check("application/x-www-form-urlencoded", []byte(body), time.Now()); err != nil {
		t.Fatalf("own signature refused: %v", err)
	}
	for _, bad := range [][]Field{
		{{"cverify", "X"}},
		{{"a", "1"}, {"a", "2"}},
		{{"", "1"}},
		{{"a.b", "1"}, {"a_b", "2"}},
	} {
		if _, err := v.SignForm(bad); err == nil {
			t.Errorf("SignForm(%v) accepted", bad)
		}
	}
}

// JVZoo's JVZIPN is the sorted scheme with prefix c; its documentation's
// example: secret key "secret", the one field ccustname=fullname, cverify
// 38CFCDED (SHA-1 of "fullname|secret").
func TestITNSJVZooDocumentedExample(t *testing.T) {
	v := mustITNS(t, ITNSConfig{Secrets: [][]byte{[]byte("secret")}, Prefix: "c"})
	if got := v.Sign(formOf(t, "ccustname=fullname"), []byte("secret")); got != "38CFCDED" {
		t.Fatalf("Sign = %s, want 38CFCDED", got)
	}
	if _, _, err := v.Check("application/x-www-form-urlencoded", []byte("ccustname=fullname&cverify=38CFCDED"), time.Now()); err != nil {
		t.Fatal(err)
	}
}
