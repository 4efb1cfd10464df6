package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/switchyard-io/switchyard/internal/safefile"
)

// TLSFiles is the xDS server's TLS: a certificate and its key and,
// optionally, a CA that Envoys' client certificates must chain to.
type TLSFiles struct {
	CertFile, KeyFile string
	// ClientCAFile, when set, requires every Envoy to present a client
	// certificate signed by it (mutual TLS).
	ClientCAFile string
	// BindGroups, with ClientCAFile, gives an Envoy only the proxy groups
	// its certificate names, as its common name or a DNS SAN: a stream
	// asking for another group is refused. Without it any certificate
	// from the CA may fetch any group's config, keys included.
	BindGroups bool
}

// Enabled reports whether any TLS file is set.
func (f TLSFiles) Enabled() bool { return f.CertFile != "" || f.KeyFile != "" || f.ClientCAFile != "" }

func (f TLSFiles) check() error {
	if f.BindGroups && f.ClientCAFile == "" {
		return errors.New("xds TLS: binding groups to client certificates needs the client CA file (mutual TLS)")
	}
	if !f.Enabled() {
		return nil
	}
	if f.CertFile == "" || f.KeyFile == "" {
		return errors.New("xds TLS: the certificate file and the key file go together; give both")
	}
	return nil
}

// tlsReloader serves the current contents of the TLS files: each handshake
// checks (at most once a second) whether a file changed, and loads it again.
// A replacement that does not load is logged and the previous certificate
// keeps serving, as with a bad policy edit.
type tlsReloader struct {
	files TLSFiles
	log   *slog.Logger

	mu        sync.Mutex
	checked   time.Time
	stamp     string // the files' sizes and times when last loaded
	cert      *tls.Certificate
	clientCAs *x509.CertPool
}

// newTLSConfig loads the files, failing with their names when they do not
// load, and returns a config that follows later changes to them.
func newTLSConfig(files TLSFiles, log *slog.Logger) (*tls.Config, error) {
	r := &tlsReloader{files: files, log: log}
	if err := r.load(); err != nil {
		return nil, err
	}
	base := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		cert, pool := r.current()
		c := base.Clone()
		c.GetConfigForClient = nil
		c.Certificates = []tls.Certificate{*cert}
		if pool != nil {
			c.ClientCAs = pool
			c.ClientAuth = tls.RequireAndVerifyClientCert
		}
		return c, nil
	}
	return base, nil
}

// current returns the certificate and client CAs, reloading them first if
// the files changed.
func (r *tlsReloader) current() (*tls.Certificate, *x509.CertPool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) >= time.Second {
		r.checked = time.Now()
		if stamp := r.fileStamp(); stamp != r.stamp {
			if err := r.loadLocked(); err != nil {
				r.log.Error("xds TLS files changed but do not load; the previous certificate keeps serving", "err", err)
			} else {
				r.log.Info("xds TLS certificate reloaded", "cert_file", r.files.CertFile)
			}
		}
	}
	return r.cert, r.clientCAs
}

func (r *tlsReloader) load() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.loadLocked()
}

// loadLocked reads the files. Errors name the files, never their contents.
func (r *tlsReloader) loadLocked() error {
	stamp := r.fileStamp()
	// safefile, not os.ReadFile: this runs inside TLS handshakes, which a
	// named pipe or an endless device put here would hang or exhaust.
	certPEM, err := safefile.Read(r.files.CertFile, safefile.FileLimit)
	if err != nil {
		return fmt.Errorf("xds TLS certificate: %w", err)
	}
	keyPEM, err := safefile.Read(r.files.KeyFile, safefile.FileLimit)
	if err != nil {
		return fmt.Errorf("xds TLS key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("xds TLS certificate %s and key %s: %w", r.files.CertFile, r.files.KeyFile, err)
	}
	var pool *x509.CertPool
	if r.files.ClientCAFile != "" {
		pem, err := safefile.Read(r.files.ClientCAFile, safefile.FileLimit)
		if err != nil {
			return fmt.Errorf("xds TLS client CA: %w", err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("xds TLS client CA %s: no PEM certificate in it", r.files.ClientCAFile)
		}
	}
	r.cert, r.clientCAs, r.stamp = &cert, pool, stamp
	return nil
}

func (r *tlsReloader) fileStamp() string {
	var s string
	for _, f := range []string{r.files.CertFile, r.files.KeyFile, r.files.ClientCAFile} {
		if f == "" {
			continue
		}
		if fi, err := os.Stat(f); err == nil {
			s += fmt.Sprintf("%s %d %d;", f, fi.Size(), fi.ModTime().UnixNano())
		} else {
			s += f + " missing;"
		}
	}
	return s
}

// certNames returns the names a stream's client certificate vouches for:
// its common name and DNS SANs (nil without a verified certificate).
func certNames(ctx context.Context) []string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil
	}
	leaf := info.State.VerifiedChains[0][0]
	return append([]string{leaf.Subject.CommonName}, leaf.DNSNames...)
}
