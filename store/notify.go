package store

import "context"

// Notifier is an optional capability of a store, found by type assertion:
// it tells engines, across processes, when work may have become claimable
// and when an operation was cancelled, so an idle engine starts new work at
// once and a cancel reaches the attempt's holder without waiting for its
// next lease renewal. Notifications are hints: they may be dropped, merged
// or spurious, so engines keep polling and renewing as if there were none.
type Notifier interface {
	// Listen delivers notifications until ctx ends or the store cannot
	// deliver them any more, then closes the channel; the caller may call
	// Listen again (after a pause) to resume. An error means notifications
	// cannot be had now.
	Listen(ctx context.Context) (<-chan Notification, error)
}

// NotificationKind says what a Notification is about.
type NotificationKind string

// Notification kinds.
const (
	// NotifyWork: operations may have become claimable (created, released,
	// a batch started or resumed or its rollout changed). Also sent after
	// a reconnection, when notifications may have been missed.
	NotifyWork NotificationKind = "work"
	// NotifyCancel: operation OperationID was cancelled (by a user, or
	// with its batch); without an OperationID, some operations were (too
	// many to name).
	NotifyCancel NotificationKind = "cancel"
)

// Notification is one hint of a Notifier.
type Notification struct {
	Kind        NotificationKind
	OperationID string // for NotifyCancel
}
