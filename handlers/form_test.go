package handlers

import (
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func TestParseForm(t *testing.T) {
	cases := []struct {
		body string
		want Form
	}{
		{"", Form{}},
		{"b=2&a=1", Form{{"a", "1"}, {"b", "2"}}},
		// PHP semantics: only '&' separates; ';' is data (url.ParseQuery
		// would reject the body instead).
		{"a=1;b=2", Form{{"a", "1;b=2"}}},
		{"a;b=1", Form{{"a;b", "1"}}},
		// Empty segments are skipped, a bare name has an empty value.
		{"&&a=1&&b&", Form{{"a", "1"}, {"b", ""}}},
		{"a=", Form{{"a", ""}}},
		// Only the first '=' splits.
		{"a==x=y", Form{{"a", "=x=y"}}},
		{"e=john%40example.com&f=a+b%2Bc&g=%26%3D", Form{{"e", "john@example.com"}, {"f", "a b+c"}, {"g", "&="}}},
		{"n=%E2%80%93+%C3%BC", Form{{"n", "– ü"}}},
		{"n=%e2%80%93", Form{{"n", "–"}}},
		// Raw UTF-8 and invalid UTF-8 are taken as bytes.
		{"n=Müller&m=\xff", Form{{"m", "\xff"}, {"n", "Müller"}}},
		{"%61%62=1", Form{{"ab", "1"}}},
	}
	for _, tc := range cases {
		got, err := ParseForm([]byte(tc.body))
		if err != nil {
			t.Errorf("ParseForm(%q): %v", tc.body, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseForm(%q) = %q, want %q", tc.body, got, tc.want)
		}
	}
}

func TestParseFormRefusals(t *testing.T) {
	cases := []struct {
		body, reason, field string
	}{
		{"a=%zz", ReasonMalformed, "a"},
		{"a=%4", ReasonMalformed, "a"},
		{"a=100%", ReasonMalformed, "a"},
		{"%g1=1", ReasonMalformed, ""},
		{"=1", ReasonMalformed, ""},
		{"a=1&=2", ReasonMalformed, ""},
		{"a=1&a=1", ReasonDuplicateField, "a"},
		{"a=1&b=2&a=3", ReasonDuplicateField, "a"},
		{"a=1&%61=2", ReasonDuplicateField, "a"},
		{"verify=1&verify=2", ReasonDuplicateField, "verify"},
		// Names PHP maps onto the same $_POST key.
		{"a.b=1&a_b=2", ReasonDuplicateField, ""},
		{"a+b=1&a_b=2", ReasonDuplicateField, ""},
		{"a=1&a[]=2", ReasonDuplicateField, ""},
		{"a[x]=1&a[y]=2", ReasonDuplicateField, ""},
		{"+a=1&a=2", ReasonDuplicateField, ""},
		{"a%00x=1&a=2", ReasonDuplicateField, ""},
	}
	for _, tc := range cases {
		_, err := ParseForm([]byte(tc.body))
		if denialReason(err) != tc.reason || denialStatus(err) != http.StatusBadRequest {
			t.Errorf("ParseForm(%q) = %v, want %s 400", tc.body, err, tc.reason)
			continue
		}
		if tc.field != "" {
			if fe, ok := err.(*FormError); !ok || fe.Field != tc.field {
				t.Errorf("ParseForm(%q): error %#v does not name field %q", tc.body, err, tc.field)
			}
		}
	}
}

func TestFormErrorNeverShowsValues(t *testing.T) {
	_, err := ParseForm([]byte("ccustcc=4111111111111111&ccustcc=4111111111111111"))
	if err == nil {
		t.Fatal("duplicate accepted")
	}
	if s := err.Error(); strings.Contains(s, "4111") {
		t.Fatalf("error shows a value: %s", s)
	}
	_, err = ParseForm([]byte("cpassword=hunter2%zz"))
	if s := err.Error(); strings.Contains(s, "hunter2") {
		t.Fatalf("error shows a value: %s", s)
	}
}

func TestFormGet(t *testing.T) {
	f := formOf(t, "c=3&a=1&b=2")
	for name, want := range map[string]string{"a": "1", "b": "2", "c": "3"} {
		if got, ok := f.Get(name); !ok || got != want {
			t.Errorf("Get(%s) = %q, %v", name, got, ok)
		}
	}
	if _, ok := f.Get("d"); ok {
		t.Error("Get(d) found")
	}
}

func TestEncodeFormRoundTrip(t *testing.T) {
	fields := []Field{{"z", "a b&c=d"}, {"a", "john@example.com"}, {"m", "Müller – 100%;x|y"}, {"e", ""}}
	form := formOf(t, EncodeForm(fields))
	for _, f := range fields {
		if got, _ := form.Get(f.Name); got != f.Value {
			t.Errorf("%s: %q, want %q", f.Name, got, f.Value)
		}
	}
}

func TestCountFieldsAndLimit(t *testing.T) {
	for body, want := range map[string]int{"": 0, "a=1": 1, "a=1&b=2": 2, "a=1&&b=2&": 2, "&": 0, "a&b&c": 3} {
		if got := CountFields([]byte(body)); got != want {
			t.Errorf("CountFields(%q) = %d, want %d", body, got, want)
		}
	}
	many := []byte(strings.Repeat("x=1&", 1001))
	err := CheckFieldCount(many, 0)
	var d *Denial
	if !errors.As(err, &d) || d.Reason != ReasonTooManyFields || d.Status != 400 {
		t.Fatalf("1001 fields: %v, want a 400 too_many_fields denial", err)
	}
	if err := CheckFieldCount(many[:len(many)-4], 0); err != nil {
		t.Errorf("1000 fields: %v", err)
	}
	if err := CheckFieldCount(many, 2000); err != nil {
		t.Errorf("1001 fields with max 2000: %v", err)
	}
}
