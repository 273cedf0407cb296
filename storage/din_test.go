package storage

import (
	"strings"
	"testing"
)

func TestCheckDIN(t *testing.T) {
	for din, ok := range map[string]bool{
		"1001": true, "shop-A_1": true, strings.Repeat("9", MaxDINLen): true,
		"": false, "a b": false, "a/b": false, "é1": false, strings.Repeat("9", MaxDINLen+1): false,
	} {
		err := CheckDIN(din)
		if (err == nil) != ok {
			t.Errorf("CheckDIN(%q) = %v", din, err)
		}
		if err != nil && !strings.Contains(err.Error(), "a DIN is 1 to 32") {
			t.Errorf("CheckDIN(%q): %v does not say the rule", din, err)
		}
	}
}
