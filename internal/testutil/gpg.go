package testutil

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// GPG is real GnuPG with a throw-away home, as a partner who picks up the
// spool files would use it.
type GPG struct {
	Bin  string // the gpg program
	Home string // its GNUPGHOME

	removeHome bool // Home is not under t.TempDir(): Close removes it
	closeOnce  sync.Once
}

// FindGPG returns the gpg NewGPG runs (/usr/bin/gpg, else gpg on PATH);
// without one, SkipOrFail ends the test.
func FindGPG(t testing.TB) string {
	t.Helper()
	return NeedTool(t, "gpg", "/usr/bin/gpg")
}

// gpgSocketRoom is how long a home's path may be: gpg-agent puts its
// sockets (S.gpg-agent.browser the longest) into the home when there is no
// /run/user/<uid>, and a Unix socket's path has at most 107 bytes.
const gpgSocketRoom = 107 - len("/S.gpg-agent.browser")

// NewGPG finds gpg (FindGPG) and gives it an empty home under t.TempDir()
// (or, where that path is too long for the agent's sockets, under the
// system's temporary folder). At the end of the test the agents gpg
// started for that home are killed and the home is removed, so that no
// process outlives the test.
func NewGPG(t testing.TB) *GPG {
	t.Helper()
	g := &GPG{Bin: FindGPG(t), Home: filepath.Join(t.TempDir(), "gnupg")}
	if len(g.Home) > gpgSocketRoom {
		home, err := os.MkdirTemp("", "gpg")
		if err != nil {
			t.Fatal(err)
		}
		g.Home, g.removeHome = home, true
	}
	if err := os.MkdirAll(g.Home, 0o700); err != nil {
		t.Fatal(err)
	}
	// gpg starts the agent from the path it was built with; a gpg unpacked
	// elsewhere (.ci/run without root) has its agent beside it.
	if agent := filepath.Join(filepath.Dir(g.Bin), "gpg-agent"); isFile(agent) {
		conf := "agent-program " + agent + "\n"
		if err := os.WriteFile(filepath.Join(g.Home, "gpg.conf"), []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(g.Close)
	return g
}

// Close kills the agents of g's home (gpgconf --kill all) and waits until
// they are gone. NewGPG's cleanup calls it; calling it before, as soon as
// the home is no longer needed, is fine.
func (g *GPG) Close() {
	g.closeOnce.Do(func() {
		if conf, err := exec.LookPath("gpgconf"); err == nil {
			kill := exec.Command(conf, "--homedir", g.Home, "--kill", "all")
			kill.Env = append(os.Environ(), "GNUPGHOME="+g.Home)
			_ = kill.Run()
		}
		for deadline := time.Now().Add(10 * time.Second); g.agentAnswers() && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		if g.removeHome {
			os.RemoveAll(g.Home)
		}
	})
}

// agentAnswers tells whether a socket in g's home still takes connections:
// an agent that has not exited yet.
func (g *GPG) agentAnswers() bool {
	sockets, _ := filepath.Glob(filepath.Join(g.Home, "S.*"))
	for _, s := range sockets {
		if c, err := net.DialTimeout("unix", s, time.Second); err == nil {
			c.Close()
			return true
		}
	}
	return false
}

// Run runs gpg on g's home in batch mode, with an empty passphrase and
// stdin (nil: none), and returns what it wrote to stdout and to stderr; the
// error names the command and holds what gpg said.
func (g *GPG) Run(stdin []byte, args ...string) (stdout, stderr []byte, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, g.Bin, append([]string{"--homedir", g.Home, "--batch", "--no-tty",
		"--pinentry-mode", "loopback", "--passphrase", ""}, args...)...)
	cmd.Env = append(os.Environ(), "GNUPGHOME="+g.Home, "LC_ALL=C")
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err = cmd.Run(); err != nil {
		err = fmt.Errorf("gpg %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.Bytes(), errb.Bytes(), err
}

// MustRun is Run that fails t on an error, and returns stdout.
func (g *GPG) MustRun(t testing.TB, stdin []byte, args ...string) []byte {
	t.Helper()
	out, _, err := g.Run(stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// GenKey makes a key without a passphrase for uid, with algo, usage and
// expire as gpg --quick-gen-key takes them (e.g. "rsa3072", "encrypt",
// "never"), and returns its fingerprint.
func (g *GPG) GenKey(t testing.TB, uid, algo, usage, expire string) string {
	t.Helper()
	g.MustRun(t, nil, "--quick-gen-key", uid, algo, usage, expire)
	fpr, err := g.Fingerprint(uid)
	if err != nil {
		t.Fatal(err)
	}
	return fpr
}

// Fingerprint returns the fingerprint of the key whose user ID is exactly uid.
func (g *GPG) Fingerprint(uid string) (string, error) {
	out, _, err := g.Run(nil, "--with-colons", "--list-keys", "="+uid)
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Split(l, ":"); len(f) > 9 && f[0] == "fpr" {
			return f[9], nil
		}
	}
	return "", fmt.Errorf("gpg: no fingerprint for %s", uid)
}

// PublicKeyFile exports the public key of id (a fingerprint, user ID or
// e-mail address) ASCII-armored, as its owner hands it over, into a file
// under t.TempDir(), and returns the file's path: a pgp_key.
func (g *GPG) PublicKeyFile(t testing.TB, id string) string {
	t.Helper()
	pub := g.MustRun(t, nil, "--armor", "--export", id)
	if !bytes.Contains(pub, []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----")) {
		t.Fatalf("gpg --export %s: no armored key:\n%s", id, pub)
	}
	return writeTemp(t, "", "public-key-*.asc", pub)
}

// Decrypt decrypts file (with a secret key in g's home), returning the
// plaintext and gpg's status lines (--status-fd).
func (g *GPG) Decrypt(t testing.TB, file string) (plain []byte, status string) {
	t.Helper()
	out, errb, err := g.Run(nil, "--status-fd", "2", "--decrypt", file)
	if err != nil {
		t.Fatalf("gpg --decrypt %s: %v", file, err)
	}
	return out, string(errb)
}

func isFile(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}
