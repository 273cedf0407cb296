package notelog

import (
	"fmt"
	"net/url"
	"strings"
	"unicode/utf8"
)

// maxLabelValue bounds a label's value: a label identifies a sale (a
// receipt, a transaction id), it is not a place for a payload.
const maxLabelValue = 128

// CheckLabels refuses label fields whose values must never be shown
// (sensitive: card data, passwords, secrets) and empty or repeated names.
func CheckLabels(fields []string, sensitive func(string) bool) error {
	seen := map[string]bool{}
	for _, f := range fields {
		switch {
		case strings.TrimSpace(f) == "":
			return fmt.Errorf("label: empty field name")
		case seen[f]:
			return fmt.Errorf("label %s: given twice", f)
		case sensitive != nil && sensitive(f):
			return fmt.Errorf("label %s: the field is named like card data or a secret, whose values are never stored in clear or shown", f)
		}
		seen[f] = true
	}
	return nil
}

// extractLabels returns the first value of each field of form (a form
// body or a query string), cut to maxLabelValue.
func extractLabels(form []byte, fields []string) map[string]string {
	if len(fields) == 0 || len(form) == 0 {
		return nil
	}
	values, _ := url.ParseQuery(string(form)) // a malformed pair leaves the others
	var out map[string]string
	for _, f := range fields {
		vs := values[f]
		if len(vs) == 0 {
			continue
		}
		if out == nil {
			out = make(map[string]string, len(fields))
		}
		out[f] = clip(vs[0], maxLabelValue)
	}
	return out
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
