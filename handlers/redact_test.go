package handlers

import "testing"

func TestSensitiveMatchesNamesWithAnyPrefix(t *testing.T) {
	s := NewSensitive("ssn")
	for _, name := range []string{"cc", "CC", "ccnum", "xcvv2", "cvv", "password", "member_password",
		"confirm_password", "pwd", "cpass", "cardnumber", "ssn", "customer_ssn", "cverify"} {
		if !s.Match(name) {
			t.Errorf("%q should be sensitive", name)
		}
	}
	for _, name := range []string{"email", "username", "amount", "ccountry", "transaction", "passthrough1", ""} {
		if s.Match(name) {
			t.Errorf("%q should not be sensitive", name)
		}
	}
}
