package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// cmdUpstream is the stand-in for a legacy script: it reads the body and
// answers "OK" as itns.php does, as fast as net/http allows, so that the
// proxies in front of it are what the benchmark measures. GET /__count
// returns how many requests it answered.
func cmdUpstream(args []string) error {
	fs := flag.NewFlagSet("upstream", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:18081", "listen address")
	_ = fs.Parse(args)
	var n atomic.Int64
	ok := []byte("OK\n")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/__count" {
			writeJSON(w, map[string]int64{"requests": n.Load()})
			return
		}
		_, _ = io.Copy(io.Discard, r.Body)
		n.Add(1)
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "3")
		_, _ = w.Write(ok)
	})
	return serve(&http.Server{Addr: *addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}, nil)
}

// sinkCounts are the sink's counters, as /__count returns them.
type sinkCounts struct {
	TLSRequests  int64 `json:"tls_requests"`   // copies received over HTTPS (the chain)
	TLSDistinct  int64 `json:"tls_distinct"`   // distinct X-Postback-Id among them
	TLSMissingID int64 `json:"tls_missing_id"` // HTTPS copies without X-Postback-Id
	HTTPRequests int64 `json:"http_requests"`  // copies over plain HTTP (nginx mirror)
}

// cmdSink is the secondary destination: an HTTPS listener with its own
// throw-away CA (written to <certs>/ca.pem for the chain's ca_cert) that
// counts distinct X-Postback-Id, and a plain-HTTP listener for nginx's
// mirror, which cannot verify a private CA without more configuration and
// would not be durable either way. GET /__count on the HTTP listener
// returns the counters.
func cmdSink(args []string) error {
	fs := flag.NewFlagSet("sink", flag.ExitOnError)
	tlsAddr := fs.String("tls", "127.0.0.1:18443", "HTTPS listen address")
	httpAddr := fs.String("http", "127.0.0.1:18082", "plain HTTP listen address")
	certs := fs.String("certs", "", "folder for ca.pem (required)")
	h2 := fs.Bool("h2", true, "offer HTTP/2 on the HTTPS listener (else HTTP/1.1 only)")
	_ = fs.Parse(args)
	if *certs == "" {
		return errors.New("-certs is required")
	}
	cert, err := makeCerts(*certs)
	if err != nil {
		return err
	}

	var (
		mu       sync.Mutex
		seen     = make(map[string]struct{}, 1<<16)
		tlsN     atomic.Int64
		missing  atomic.Int64
		plainN   atomic.Int64
		distinct atomic.Int64
	)
	ok := []byte("OK\n")
	answer := func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "3")
		_, _ = w.Write(ok)
	}
	tlsH := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		tlsN.Add(1)
		if id := r.Header.Get("X-Postback-Id"); id != "" {
			mu.Lock()
			if _, dup := seen[id]; !dup {
				seen[id] = struct{}{}
				distinct.Add(1)
			}
			mu.Unlock()
		} else {
			missing.Add(1)
		}
		answer(w)
	})
	plainH := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/__count" {
			writeJSON(w, sinkCounts{
				TLSRequests: tlsN.Load(), TLSDistinct: distinct.Load(),
				TLSMissingID: missing.Load(), HTTPRequests: plainN.Load(),
			})
			return
		}
		_, _ = io.Copy(io.Discard, r.Body)
		plainN.Add(1)
		answer(w)
	})
	tlsSrv := &http.Server{
		Addr: *tlsAddr, Handler: tlsH, ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	}
	plainSrv := &http.Server{Addr: *httpAddr, Handler: plainH, ReadHeaderTimeout: 10 * time.Second}
	tlsSrv.TLSConfig.NextProtos = []string{"http/1.1"}
	if *h2 {
		// HTTP/2 as a partner's server would likely offer it; Go's client uses it.
		tlsSrv.TLSConfig.NextProtos = []string{"h2", "http/1.1"}
	}
	errc := make(chan error, 1)
	go func() { errc <- serve(tlsSrv, tlsSrv.TLSConfig) }()
	go func() { errc <- serve(plainSrv, nil) }()
	return <-errc
}

// serve listens (TLS when conf is set) until SIGINT or SIGTERM.
func serve(srv *http.Server, conf *tls.Config) error {
	ln, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		return err
	}
	if conf != nil {
		ln = tls.NewListener(ln, conf)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// makeCerts writes a throw-away CA to dir/ca.pem and returns a loopback
// server certificate signed by it (the keys never touch the disk).
func makeCerts(dir string) (tls.Certificate, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "caddy-postback bench CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(48 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return tls.Certificate{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(48 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), caPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// getJSON fetches url into v.
func getJSON(url string, v any) error {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// cmdCount prints the JSON of a /__count endpoint (upstream or sink).
func cmdCount(args []string) error {
	fs := flag.NewFlagSet("count", flag.ExitOnError)
	url := fs.String("url", "", "counter URL")
	_ = fs.Parse(args)
	var v map[string]any
	if err := getJSON(*url, &v); err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(v)
}
