// Package upgrader is fwupgrader's engine: it turns a store and the
// Upgraders registered for each kind of device into operations that always
// end, retrying recoverable failures, enforcing deadlines and cancellation,
// and telling the host what happens through events.
//
// Hosts implement [Upgrader] (and optionally [Verifier]) for their kinds of
// device and map connection kinds to them in a [Registry]; the openwrt
// package provides the OpenWrt-over-SSH upgrader.
package upgrader
