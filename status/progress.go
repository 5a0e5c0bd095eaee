package status

import "math/bits"

import "fmt"

// Progress milestones, in percent, as reported while an operation runs. The
// upload fills the range from ProgressChecksum to ProgressUploaded in
// proportion to the bytes sent (see [UploadProgress]).
const (
	ProgressStart       = 0
	ProgressConnected   = 10
	ProgressIdentity    = 15
	ProgressChecksum    = 20
	ProgressUploaded    = 60
	ProgressFlashing    = 65
	ProgressReconnected = 90
	ProgressDone        = 100
)

// ValidateProgress returns an error unless 0 <= p <= 100.
func ValidateProgress(p int) error {
	if p < 0 || p > 100 {
		return fmt.Errorf("status: progress %d out of range 0-100", p)
	}
	return nil
}

// UploadProgress maps sent bytes of an upload of total bytes onto the range
// ProgressChecksum..ProgressUploaded. A total <= 0 counts as finished.
func UploadProgress(sent, total int64) int {
	if total <= 0 || sent >= total {
		return ProgressUploaded
	}
	if sent <= 0 {
		return ProgressChecksum
	}
	// sent*span in 128 bits: it overflows 64 for images over 2^58 bytes.
	hi, lo := bits.Mul64(uint64(sent), ProgressUploaded-ProgressChecksum)
	q, _ := bits.Div64(hi, lo, uint64(total)) // sent < total: q < span
	return ProgressChecksum + int(q)
}
