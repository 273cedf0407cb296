// Command gencert makes a throw-away CA and a loopback server certificate for
// the local demo (`make run`): the demo's secondary destination is served
// over HTTPS by a certificate the edge trusts through ca_cert, as a partner's
// would be. Never use these files outside the demo.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"math/big"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"net"
	"os"
	"path/filepath"
	"time"
)

func main() {
	out := flag.String("out", ".run/certs", "output folder")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "gencert:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	if _, err := os.Stat(filepath.Join(out, "server.crt")); err == nil {
		return nil // keep the existing demo CA
	}
	if err := os.MkdirAll(out, 0o700); err != nil {
		return err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "caddy-postback demo CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:     []string{"localhost"},
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	srvKeyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		return err
	}
	files := []struct {
		name, typ string
		der       []byte
	}{
		{"ca.crt", "CERTIFICATE", caDER},
		{"server.crt", "CERTIFICATE", srvDER},
		{"server.key", "EC PRIVATE KEY", srvKeyDER},
	}
	for _, f := range files {
		data := pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der})
		if err := os.WriteFile(filepath.Join(out, f.name), data, 0o600); err != nil {
			return err
		}
	}
	return writePartnerKey(out, "1001")
}

// writePartnerKey makes the key pair a partner would generate: the public
// half for pgp_key, the secret half so the demo user can `gpg --import` it
// and decrypt spool files.
func writePartnerKey(out, din string) error {
	ent, err := openpgp.NewEntity("Partner "+din, "caddy-postback demo", "saft-"+din+"@partner.example",
		&packet.Config{Algorithm: packet.PubKeyAlgoRSA, RSABits: 3072})
	if err != nil {
		return err
	}
	write := func(name, blockType string, serialize func(w io.Writer) error) error {
		f, err := os.OpenFile(filepath.Join(out, name), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		w, err := armor.Encode(f, blockType, nil)
		if err != nil {
			f.Close()
			return err
		}
		if err := serialize(w); err != nil {
			f.Close()
			return err
		}
		if err := w.Close(); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	if err := write("partner-"+din+".asc", openpgp.PublicKeyType, ent.Serialize); err != nil {
		return err
	}
	return write("partner-"+din+".secret.asc", openpgp.PrivateKeyType, func(w io.Writer) error {
		return ent.SerializePrivate(w, nil)
	})
}
