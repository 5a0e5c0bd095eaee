package openwrttest

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"
)

// silentListener holds a TCP port without answering: a listening socket
// with a backlog of 0 whose one queue slot is taken by a connection of its
// own, so that Linux drops every further SYN and connection attempts time
// out instead of being refused.
type silentListener struct {
	ln   net.Listener
	fill net.Conn
}

// listenSilent makes addr silent. The caller closes the result before
// listening on addr again.
func listenSilent(addr string) (*silentListener, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	family := syscall.AF_INET
	var sa syscall.Sockaddr
	if ap.Addr().Is4() {
		sa = &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	} else {
		family = syscall.AF_INET6
		sa = &syscall.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("openwrttest: silent socket: %w", err)
	}
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	if err := syscall.Bind(fd, sa); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("openwrttest: silent bind: %w", err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "silent")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	fill, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		ln.Close()
		return nil, err
	}
	return &silentListener{ln: ln, fill: fill}, nil
}

// Close frees the port.
func (s *silentListener) Close() {
	s.ln.Close()
	s.fill.Close()
}
