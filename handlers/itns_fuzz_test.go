package handlers

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"
)

const fuzzSecret = "fuzz-secret"

// refParse is a second, naive form parser with the same rules as ParseForm
// except the PHP-mangling duplicate check: ok is false when it would refuse.
func refParse(body string) (m map[string]string, mangled, ok bool) {
	m = map[string]string{}
	for _, seg := range strings.Split(body, "&") {
		if seg == "" {
			continue
		}
		rn, rv, _ := strings.Cut(seg, "=")
		n, err1 := url.QueryUnescape(rn)
		v, err2 := url.QueryUnescape(rv)
		if err1 != nil || err2 != nil || n == "" {
			return nil, false, false
		}
		if _, dup := m[n]; dup {
			return nil, false, false
		}
		if strings.ContainsAny(n, " .[\x00") {
			mangled = true
		}
		m[n] = v
	}
	return m, mangled, true
}

// FuzzVerify checks form parsing and verification together: no input
// panics, every refusal is a Denial, and a body is accepted exactly when a
// naive reference implementation finds a valid signature in it, so an
// unsigned or wrongly signed body is never accepted. The seed corpus in
// testdata/fuzz/FuzzVerify holds genuine notifications for each verifier
// below, so mutations start from bodies that pass.
func FuzzVerify(f *testing.F) {
	type verifier struct {
		v      *ITNS
		prefix string
		v1     bool
	}
	var vs []verifier
	for _, c := range []struct {
		prefix string
		alg    Algorithm
	}{{"", AlgorithmSorted}, {"c", AlgorithmSorted}, {"c", AlgorithmV1}} {
		v := mustITNS(f, ITNSConfig{Secrets: [][]byte{[]byte("old-secret"), []byte(fuzzSecret)}, Prefix: c.prefix, Algorithm: c.alg})
		vs = append(vs, verifier{v, c.prefix, c.alg == AlgorithmV1})
	}
	f.Add([]byte("ctransaction=SALE&cverify=00000000"))
	now := time.Unix(1_700_000_000, 0)
	f.Fuzz(func(t *testing.T, body []byte) {
		ref, mangled, parses := refParse(string(body))
		for _, x := range vs {
			form, idx, err := x.v.Check("application/x-www-form-urlencoded", body, now)
			if err != nil {
				var d *Denial
				if !errors.As(err, &d) {
					t.Fatalf("refusal without a Denial: %v", err)
				}
			}
			sigField := x.prefix + "verify"
			refValid := false
			if parses {
				if got, ok := ref[sigField]; ok {
					refValid = strings.EqualFold(got, refSignature(ref, x.prefix, fuzzSecret, x.v1)) ||
						strings.EqualFold(got, refSignature(ref, x.prefix, "old-secret", x.v1))
				}
			}
			if err == nil {
				if !refValid {
					t.Fatalf("accepted a body the reference refuses (prefix %q v1=%v): %q", x.prefix, x.v1, body)
				}
				if idx < 0 || idx > 1 || len(form) != len(ref) {
					t.Fatalf("accepted with secret index %d and %d fields (reference %d)", idx, len(form), len(ref))
				}
			} else if refValid && !mangled {
				t.Fatalf("refused a genuine body (prefix %q v1=%v): %v: %q", x.prefix, x.v1, err, body)
			}
		}
		// A parsed form is sorted, unique, and survives re-encoding.
		form, err := ParseForm(body)
		if err != nil {
			return
		}
		for i := 1; i < len(form); i++ {
			if form[i-1].Name >= form[i].Name {
				t.Fatalf("form not sorted or not unique at %d: %q", i, form)
			}
		}
		again, err := ParseForm([]byte(EncodeForm(form)))
		if err != nil || len(again) != len(form) {
			t.Fatalf("re-encoded form: %v, %d fields of %d", err, len(again), len(form))
		}
		for i := range form {
			if again[i] != form[i] {
				t.Fatalf("re-encoded field %d: %q, want %q", i, again[i], form[i])
			}
		}
	})
}

// refClickBank is a naive second reading of a ClickBank JSON body: Go's
// lenient json.Unmarshal (duplicates and invalid UTF-8 allowed), the
// sample's trim, receipt and transactionType non-empty strings.
func refClickBank(body []byte, secrets ...string) bool {
	var env map[string]any
	if json.Unmarshal(body, &env) != nil {
		return false
	}
	note, _ := env["notification"].(string)
	ivs, _ := env["iv"].(string)
	ct, err1 := base64.StdEncoding.DecodeString(note)
	iv, err2 := base64.StdEncoding.DecodeString(ivs)
	if err1 != nil || err2 != nil || len(iv) != 16 || len(ct) == 0 || len(ct)%16 != 0 {
		return false
	}
	var cutset string
	for c := 0; c <= 0x1a; c++ {
		cutset += string(rune(c))
	}
	for _, s := range secrets {
		b, _ := aes.NewCipher(ClickBankKey([]byte(s)))
		plain := make([]byte, len(ct))
		cipher.NewCBCDecrypter(b, iv).CryptBlocks(plain, ct)
		var m map[string]any
		if json.Unmarshal([]byte(strings.Trim(string(plain), cutset)), &m) != nil {
			continue
		}
		r, _ := m["receipt"].(string)
		tt, _ := m["transactionType"].(string)
		if r != "" && tt != "" {
			return true
		}
	}
	return false
}

// FuzzClickBankJSON: no body panics, every refusal is a Denial, and a body
// is accepted only when the naive reading above finds a notification in
// it under one of the secrets, so garbage is never accepted. The seeds
// (f.Add and testdata/fuzz/FuzzClickBankJSON) are genuine notifications,
// ClickBank's published one and near misses.
func FuzzClickBankJSON(f *testing.F) {
	c := mustClickBank(f, ClickBankJSONConfig{Secrets: [][]byte{[]byte("old-secret"), []byte(fuzzSecret), []byte(cbSampleSecret)}})
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for i, n := range genClickBankNotifications(3, 3, now) {
		body, err := c.Encrypt([]byte(n), bytes.Repeat([]byte{byte(i)}, 16))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(body)
	}
	f.Add([]byte(cbSampleBody))
	f.Add([]byte(`{"notification":"","iv":""}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, ct := range []string{"", "application/json"} {
			n, err := c.Check(ct, body, now)
			if err != nil {
				var d *Denial
				if !errors.As(err, &d) {
					t.Fatalf("refusal without a Denial: %v", err)
				}
				continue
			}
			if !refClickBank(body, "old-secret", fuzzSecret, cbSampleSecret) {
				t.Fatalf("accepted a body the reference refuses: %q", body)
			}
			for _, id := range []string{n.Receipt, n.TransactionType, n.Role} {
				if id != "" && !SafeIdentifier(id) {
					t.Fatalf("unsafe identifier %q", id)
				}
			}
			if n.SecretIndex < 0 || n.SecretIndex > 2 || len(n.ReplayKey()) == 0 {
				t.Fatalf("accepted as %+v", n)
			}
		}
	})
}
