package storage

import "fmt"

// MaxDINLen is the longest Destination Identification Number.
const MaxDINLen = 32

// CheckDIN is the one syntax of a DIN, for the configuration, the store's
// keys and the report's filters: 1 to MaxDINLen ASCII letters, digits, '-'
// or '_'. Its error quotes the value, which is a name, never a secret.
func CheckDIN(din string) error {
	if din == "" || len(din) > MaxDINLen {
		return fmt.Errorf("DIN %q: a DIN is 1 to %d letters, digits, '-' or '_'", din, MaxDINLen)
	}
	for i := 0; i < len(din); i++ {
		c := din[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("DIN %q: a DIN is 1 to %d letters, digits, '-' or '_'", din, MaxDINLen)
		}
	}
	return nil
}
