package caddymodule

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/postbackedge/caddy-postback/storage"
)

func TestRotateKeyCommand(t *testing.T) {
	dir := testDir(t, "rotate")
	oldKey, newKey := bytes.Repeat([]byte{7}, 32), bytes.Repeat([]byte{9}, 32)
	s, err := storage.Open(storage.Options{Dir: dir, EncryptionKey: oldKey})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Enqueue(context.Background(), []storage.NewDelivery{{DIN: "1", Payload: []byte("x=1")}}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	t.Setenv("POSTBACK_TEST_OLD_KEY", hex.EncodeToString(oldKey))
	run := func(args ...string) (string, error) {
		cmd := newPostbackCommand()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(append([]string{"rotate-key"}, args...))
		err := cmd.Execute()
		return out.String(), err
	}
	if _, err := run("--storage-dir", dir, "--old-key", "{env.POSTBACK_TEST_OLD_KEY}", "--new-key", "tooshort"); err == nil ||
		!strings.Contains(err.Error(), "--new-key") {
		t.Fatalf("bad new key: %v", err)
	}
	out, err := run("--storage-dir", dir, "--old-key", "{env.POSTBACK_TEST_OLD_KEY}", "--new-key", base64.StdEncoding.EncodeToString(newKey))
	if err != nil || !strings.Contains(out, "rotated") {
		t.Fatalf("rotate-key: %v\n%s", err, out)
	}
	s, err = storage.Open(storage.Options{Dir: dir, EncryptionKey: newKey})
	if err != nil {
		t.Fatalf("open with the new key: %v", err)
	}
	s.Close()
}
