package main

// A simulated ACME camera: the device side of the example. It serves a
// small HTTPS API on 127.0.0.1 (real TCP, real TLS with its own
// certificate), asks for a bearer token, and goes away while it reboots.
//
//	GET    /api/v1/status          serial, model, firmware, boot id, free space, staged image
//	PUT    /api/v1/firmware        stage a firmware file (the body); answers its SHA-256
//	DELETE /api/v1/firmware        discard the staged file
//	POST   /api/v1/firmware/check  check the staged file is firmware for this model
//	POST   /api/v1/firmware/flash  {"sha256": ...}: write the staged file to flash
//	POST   /api/v1/reboot          reboot (into the flashed firmware, if any)

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"sync"
	"time"
)

// cameraConfig describes a simulated camera.
type cameraConfig struct {
	Serial   string // the camera's identity: the host's device ID
	Model    string // e.g. "X200"
	Firmware string // what it runs at first, e.g. "AcmeOS 2.3.1"
	Token    string // the bearer token its API asks for
	// RebootDelay is how long a reboot keeps it off the network.
	RebootDelay time.Duration
	// Storage is the room for a staged firmware file. Defaults to 64 MiB.
	Storage int64
}

// cameraStatus is the body of GET /api/v1/status.
type cameraStatus struct {
	Serial   string `json:"serial"`
	Model    string `json:"model"`
	Firmware string `json:"firmware"`
	BootID   string `json:"boot_id"`
	// FreeBytes is the room for a firmware file (an upload replaces the
	// file staged).
	FreeBytes int64 `json:"free_bytes"`
	// Staged is the SHA-256 of the staged firmware file ("" when none).
	Staged string `json:"staged,omitempty"`
	// Pending is the firmware flashed and waiting for a reboot.
	Pending string `json:"pending,omitempty"`
}

// camera is a running simulated camera.
type camera struct {
	cfg  cameraConfig
	cert tls.Certificate
	leaf *x509.Certificate
	addr string // 127.0.0.1:port, kept across reboots

	mu        sync.Mutex
	firmware  string
	bootID    string
	staged    []byte
	stagedSum string
	pending   string
	flashes   int
	srv       *http.Server // nil while off
	off       bool         // powered off for good (unreachable)
	closed    bool
	rebooting sync.WaitGroup
	stop      chan struct{}
}

// startCamera starts a camera listening on a free port of 127.0.0.1.
func startCamera(cfg cameraConfig) (*camera, error) {
	if cfg.Storage == 0 {
		cfg.Storage = 64 << 20
	}
	cert, leaf, err := selfSigned(cfg.Serial)
	if err != nil {
		return nil, err
	}
	c := &camera{cfg: cfg, cert: cert, leaf: leaf, firmware: cfg.Firmware, bootID: newBootID(), stop: make(chan struct{})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c.addr = ln.Addr().String()
	c.serve(ln)
	return c, nil
}

// URL is the base URL of the camera's API.
func (c *camera) URL() string { return "https://" + c.addr }

// Certificate is the camera's TLS certificate, for the host to pin.
func (c *camera) Certificate() *x509.Certificate { return c.leaf }

// Firmware is what the camera runs now.
func (c *camera) Firmware() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.firmware
}

// Flashes counts the firmware files written to its flash.
func (c *camera) Flashes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flashes
}

// Staged reports whether a firmware file is staged.
func (c *camera) Staged() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.staged != nil
}

// PowerOff takes the camera off the network for good: it refuses every
// connection from now on.
func (c *camera) PowerOff() {
	c.mu.Lock()
	c.off = true
	srv := c.srv
	c.srv = nil
	c.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// Close stops the camera, a reboot under way included.
func (c *camera) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	close(c.stop)
	c.mu.Unlock()
	c.PowerOff()
	c.rebooting.Wait()
}

// serve answers the API on ln until the next reboot or Close.
func (c *camera) serve(ln net.Listener) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/status", c.status)
	mux.HandleFunc("PUT /api/v1/firmware", c.upload)
	mux.HandleFunc("DELETE /api/v1/firmware", c.discard)
	mux.HandleFunc("POST /api/v1/firmware/check", c.check)
	mux.HandleFunc("POST /api/v1/firmware/flash", c.flash)
	mux.HandleFunc("POST /api/v1/reboot", c.reboot)
	srv := &http.Server{
		Handler:           c.auth(mux),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0), // TLS handshakes refused by clients that pin another certificate
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.off || c.closed {
		ln.Close() // switched off while it booted
		return
	}
	c.srv = srv
	go func() {
		_ = srv.Serve(tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{c.cert}, MinVersion: tls.VersionTLS12}))
	}()
}

// auth refuses requests without the camera's bearer token.
func (c *camera) auth(next http.Handler) http.Handler {
	want := []byte("Bearer " + c.cfg.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			writeJSON(w, http.StatusUnauthorized, apiError{Error: "bad or missing token"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (c *camera) status(w http.ResponseWriter, _ *http.Request) {
	c.mu.Lock()
	st := cameraStatus{Serial: c.cfg.Serial, Model: c.cfg.Model, Firmware: c.firmware, BootID: c.bootID,
		FreeBytes: c.cfg.Storage, Staged: c.stagedSum, Pending: c.pending}
	c.mu.Unlock()
	writeJSON(w, http.StatusOK, st)
}

// upload stages the request's body. A new upload replaces the staged file.
func (c *camera) upload(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	c.staged, c.stagedSum = nil, "" // the room of the old one is the new one's
	c.mu.Unlock()
	if r.ContentLength > c.cfg.Storage {
		writeJSON(w, http.StatusRequestEntityTooLarge, apiError{Error: fmt.Sprintf("%d bytes do not fit in %d", r.ContentLength, c.cfg.Storage)})
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, c.cfg.Storage+1))
	switch {
	case err != nil:
		writeJSON(w, http.StatusBadRequest, apiError{Error: "upload broke off: " + err.Error()})
		return
	case int64(len(body)) > c.cfg.Storage:
		writeJSON(w, http.StatusRequestEntityTooLarge, apiError{Error: "no room for the file"})
		return
	case r.ContentLength >= 0 && int64(len(body)) != r.ContentLength:
		writeJSON(w, http.StatusBadRequest, apiError{Error: "upload broke off"})
		return
	}
	sum := sha256.Sum256(body)
	c.mu.Lock()
	c.staged, c.stagedSum = body, hex.EncodeToString(sum[:])
	c.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"sha256": hex.EncodeToString(sum[:]), "size": len(body)})
}

func (c *camera) discard(w http.ResponseWriter, _ *http.Request) {
	c.mu.Lock()
	c.staged, c.stagedSum = nil, ""
	c.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// checkStaged checks the staged file against this camera; the caller
// holds c.mu.
func (c *camera) checkStaged() (fwHeader, int, error) {
	if c.staged == nil {
		return fwHeader{}, http.StatusConflict, errors.New("no firmware file staged")
	}
	h, err := readHeader(bytes.NewReader(c.staged))
	if err != nil {
		return h, http.StatusUnprocessableEntity, err
	}
	if !h.supports(c.cfg.Model) {
		return h, http.StatusUnprocessableEntity, fmt.Errorf("the firmware is for %v, this camera is a %s", h.Models, c.cfg.Model)
	}
	return h, http.StatusOK, nil
}

func (c *camera) check(w http.ResponseWriter, _ *http.Request) {
	c.mu.Lock()
	h, code, err := c.checkStaged()
	c.mu.Unlock()
	if err != nil {
		writeJSON(w, code, apiError{Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"firmware": h.Firmware})
}

// flash writes the staged file to the flash, if it is the one the client
// names and it passes the check; it runs after the next reboot.
func (c *camera) flash(w http.ResponseWriter, r *http.Request) {
	var req struct {
		SHA256 string `json:"sha256"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "bad request body"})
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	h, code, err := c.checkStaged()
	switch {
	case err != nil:
		writeJSON(w, code, apiError{Error: err.Error()})
	case req.SHA256 != c.stagedSum:
		writeJSON(w, http.StatusConflict, apiError{Error: "the staged file is not the one named"})
	default:
		c.pending, c.flashes = h.Firmware, c.flashes+1
		c.staged, c.stagedSum = nil, ""
		writeJSON(w, http.StatusOK, map[string]string{"pending": h.Firmware})
	}
}

// reboot answers, then drops off the network for RebootDelay and comes
// back on the same address with a new boot ID, running the flashed
// firmware if there is one.
func (c *camera) reboot(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Connection", "close")
	writeJSON(w, http.StatusAccepted, map[string]string{"state": "rebooting"})
	c.mu.Lock()
	defer c.mu.Unlock()
	srv := c.srv
	if srv == nil || c.closed {
		return
	}
	c.srv = nil
	c.rebooting.Add(1)
	go func() {
		defer c.rebooting.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = srv.Shutdown(ctx) // lets this answer go out
		cancel()
		srv.Close()
		t := time.NewTimer(c.cfg.RebootDelay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-c.stop:
			return
		}
		c.mu.Lock()
		if c.pending != "" {
			c.firmware, c.pending = c.pending, ""
		}
		c.staged, c.stagedSum = nil, "" // staging is in RAM
		c.bootID = newBootID()
		off := c.off || c.closed
		c.mu.Unlock()
		if off {
			return
		}
		ln, err := net.Listen("tcp", c.addr)
		if err != nil {
			return // the port was taken meanwhile: the camera stays away
		}
		c.serve(ln)
	}()
}

func newBootID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// selfSigned makes the camera's own certificate, for 127.0.0.1.
func selfSigned(serial string) (tls.Certificate, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{Organization: []string{"ACME cameras"}, CommonName: serial},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, leaf, nil
}
