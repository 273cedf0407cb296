package storage

import "fmt"

// MaxDINLen is the longest Destination Identification Number.
const MaxDINLen = 32

// CheckDIN is the one syntax of a DIN, for the configuration, the store's
// keys and the report's filters: 1 to MaxDINLen ASCII letters, digits, '-'
// or '_'. Its error quotes the value, which is a name, never a secret.
func CheckDIN(din string) error {
	if din == "" || len(din) > MaxDINLen || !isToken(din) {
		return fmt.Errorf("DIN %q: a DIN is 1 to %d letters, digits, '-' or '_'", din, MaxDINLen)
	}
	return nil
}

// MaxNodeLen bounds a fleet node's name.
const MaxNodeLen = 64

// CheckNode is the rule for the name of an edge in a fleet: 1 to 64
// letters, digits, '-' or '_' (a NATS key and subject token, as a DIN is).
func CheckNode(node string) error {
	if node == "" || len(node) > MaxNodeLen || !isToken(node) {
		return fmt.Errorf("node %q: a node name is 1 to %d letters, digits, '-' or '_'", node, MaxNodeLen)
	}
	return nil
}

func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
