package testutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TLSServer is an HTTPS server on loopback, with the CA certificate a
// client (an edge's ca_cert) needs to trust it.
type TLSServer struct {
	*httptest.Server
	CAFile string // the CA certificate as a PEM file
	CAPEM  []byte // the same, in memory
}

// TLSOptions are what a TLSServer has other than the defaults.
type TLSOptions struct {
	// Dir is where the CA file is written; t.TempDir() when "".
	Dir string
	// Port is the loopback port to listen on; 0: any free port. A fixed
	// port lets a test configure a destination before it comes up.
	Port int
	// CA, when set, signs the server's certificate for Names (127.0.0.1
	// when none). Without it the server has the certificate of every
	// httptest TLS server (valid for 127.0.0.1, ::1 and example.com), which
	// is its own CA: see HTTPTestCA.
	CA    *CA
	Names []string
	// Quiet drops the server's error log: for handshakes the client is
	// meant to refuse.
	Quiet bool
}

// NewTLSServer starts an HTTPS server that serves h until the test ends.
func NewTLSServer(t testing.TB, h http.Handler, o TLSOptions) *TLSServer {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	if o.Port != 0 {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(o.Port)))
		if err != nil {
			t.Fatal(err)
		}
		srv.Listener.Close()
		srv.Listener = l
	}
	if o.Quiet {
		srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	}
	s := &TLSServer{Server: srv}
	if o.CA != nil {
		names := o.Names
		if len(names) == 0 {
			names = []string{"127.0.0.1"}
		}
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{o.CA.ServerCert(t, names...)}}
		s.CAFile, s.CAPEM = o.CA.File, o.CA.PEM
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	if o.CA == nil {
		s.CAPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
		s.CAFile = writeTemp(t, o.Dir, "httptest-ca-*.pem", s.CAPEM)
	}
	return s
}

var httptestPEM = sync.OnceValue(func() []byte {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
})

// HTTPTestCA writes the certificate every httptest TLS server presents
// (valid for 127.0.0.1; it is its own CA) as a PEM file under dir
// (t.TempDir() when "") and returns its path: a ca_cert that trusts a
// NewTLSServer that is not started yet, or that never will be.
func HTTPTestCA(t testing.TB, dir string) string {
	t.Helper()
	return writeTemp(t, dir, "httptest-ca-*.pem", httptestPEM())
}

// CA is a throw-away certificate authority: a partner's own CA, which a
// destination's ca_cert names.
type CA struct {
	File string // the CA certificate as a PEM file
	PEM  []byte // the same, in memory
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewCA makes a CA, valid from an hour ago for a day, and writes its
// certificate under dir (t.TempDir() when "").
func NewCA(t testing.TB, dir string) *CA {
	t.Helper()
	key := newKey(t)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(t), Subject: pkix.Name{CommonName: "caddy-postback test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &CA{PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), cert: cert, key: key}
	ca.File = writeTemp(t, dir, "ca-*.pem", ca.PEM)
	return ca
}

// ServerCert is a server certificate signed by ca for names: IP addresses
// or DNS names, the first also the subject's common name.
func (ca *CA) ServerCert(t testing.TB, names ...string) tls.Certificate {
	t.Helper()
	key := newKey(t)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(t), Subject: pkix.Name{CommonName: names[0]},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// writeTemp writes data to a new file under dir (t.TempDir() when "") named
// by pattern (as os.CreateTemp takes it), readable by its owner only, and
// returns its path.
func writeTemp(t testing.TB, dir, pattern string, data []byte) string {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Clean(f.Name())
}
