package faultmatrix_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/openwrt"
	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// pgMode says on which store a row runs.
type pgMode int

const (
	pgNone   pgMode = iota // the memory store
	pgShared               // a schema of its own on the package's PostgreSQL cluster
	pgOwn                  // a PostgreSQL cluster of its own (the row stops the server)
)

// sent is what a device received.
type sent int

const (
	sentUnchecked sent = iota
	// sentNothing: no command, no SFTP request (the login never happened).
	sentNothing
	// sentCommands: commands, but never the image.
	sentCommands
	// sentImage: the image, to /tmp.
	sentImage
)

func (s sent) String() string {
	return [...]string{"unchecked", "nothing", "commands only", "the image"}[s]
}

// tri is a yes/no expectation that may be left unchecked.
type tri int

const (
	unchecked tri = iota
	yes
	no
)

// cancelled is what Engine.Cancel answered in a row that cancels.
type cancelled int

const (
	cancelNone    cancelled = iota // the row does not cancel
	cancelWon                      // Cancel returned the cancelled operation
	cancelRefused                  // Cancel returned ErrNotCancellable
)

// services is what the checker asserts about the device's services.
type services int

const (
	// svcRunning: every service of the device runs at the end.
	svcRunning services = iota
	// svcUnknown: not checked (the device never came back).
	svcUnknown
)

// expect is what must come of a row for one device.
type expect struct {
	// state and reason of the operation, exactly.
	state  status.State
	reason status.Reason
	// flashes is how many times the device was flashed (0 or 1).
	flashes int
	// sent is what the device received; via the upload method it saw.
	sent sent
	via  openwrt.UploadMethod
	// checked: the uploaded file's checksum was computed on the device.
	checked tri
	// tested: sysupgrade --test ran on the device.
	tested tri
	// stopped: the upgrader stopped services to free memory.
	stopped tri
	// attempts is the operation's number of attempts (0: unchecked).
	attempts int
	// phase is the last phase the operation reached ("": unchecked).
	phase status.Phase
	// args are the flash's options between -v and the image's path; nil
	// means the default, -c.
	args []string
	// cancel is what Engine.Cancel answered.
	cancel cancelled
	// services: what runs at the end.
	services services
	// release the device runs at the end, when it is neither its old one
	// (not flashed, or back on it) nor the new one (a success).
	release string
	// progress: the upload reported progress as it went, several times.
	progress bool
	// afterDeadline: the operation ended after its deadline had passed.
	afterDeadline bool
}

// batchExpect is what must come of a batch row.
type batchExpect struct {
	// At the row's moment of interest (mid): why the batch holds, why it
	// paused, how many operations wait for an offline device.
	hold    store.HoldReason
	pause   status.PauseReason
	waiting int
	// state is the batch's state once it ended.
	state status.BatchState
	// atLeast are counts the ended batch reaches at least.
	atLeast status.Counts
}

// row is one line of the fault matrix.
type row struct {
	name string
	pg   pgMode

	// Setup: the device (or the fleet, by role), the image, the options,
	// the upgrader's and the engine's configuration.
	sim     openwrttest.Config
	host    host
	down    bool
	fleet   []member
	image   func() openwrttest.Image
	options string
	ow      func(*openwrt.Config)
	eng     func(*upgrader.Config)

	// Action: what is done (default: upgrade the device, start to end).
	act action

	// Expectations: for the device (role ""), or one of or (the outcome's
	// state chooses), or per role; and for the batch.
	expect expect
	or     []expect
	roles  map[string]expect
	batch  *batchExpect

	// defect, when set, says that the row fails because of a defect of
	// the library (see the report of the fault matrix): the row is kept
	// as it should be, failing until the library is fixed.
	defect string
}

// outcome is what an action did with one device.
type outcome struct {
	node *node
	opID string
	// cancelErr is what Cancel returned, when the action cancelled.
	cancelled bool
	cancelErr error
	// cancelAt is how many commands the device had run when the cancel was
	// asked for: after a cancel that won, only cleanup may follow.
	cancelAt int
}

// result is what an action returns.
type result struct {
	outs []outcome
	mid  *upgrader.BatchStatus // the batch at the row's moment of interest
	end  *upgrader.BatchStatus // the batch once it ended
}

// action is what a row does.
type action struct {
	name string
	hook bool // the row's store needs the hook at the move into flashing
	run  func(h *harness) result
}

// bigImage is the default image at size bytes.
func bigImage(size int64) func() openwrttest.Image {
	return func() openwrttest.Image {
		return openwrttest.NewImage(newRelease, openwrttest.DefaultBoardName, size)
	}
}

// bareImage is an image without fwtool metadata, its header naming boards.
func bareImage(boards ...string) func() openwrttest.Image {
	return func() openwrttest.Image {
		return openwrttest.Image{Boards: boards, Release: newRelease, Size: imageSize}
	}
}

// tmpFill fills most of a device's /tmp (a tmpfs of half its RAM).
var tmpFill = make([]byte, 4<<20-64<<10)

var matrix = []row{
	// ---- Connection.
	{name: "connection/refused twice then reachable",
		sim:    openwrttest.Config{Faults: openwrttest.Faults{RefuseConnections: 2}},
		expect: expect{state: status.Success, flashes: 1, sent: sentImage, via: openwrt.UploadCat, tested: yes, stopped: no, attempts: 3}},
	{name: "connection/refused for good (nothing listens)",
		down: true, eng: func(c *upgrader.Config) { c.Retry.MaxRetries = 2 },
		expect: expect{state: status.Failed, reason: status.ReasonMaxRetriesExceeded, sent: sentNothing, attempts: 3}},
	{name: "connection/wrong password",
		host: host{password: "not-the-password"}, eng: func(c *upgrader.Config) { c.Retry.MaxRetries = 1 },
		expect: expect{state: status.Aborted, reason: status.ReasonAuthFailed, sent: sentNothing, attempts: 1}},
	{name: "connection/host key changed",
		host:   host{key: keyOther},
		expect: expect{state: status.Aborted, reason: status.ReasonHostKeyMismatch, sent: sentNothing, attempts: 1}},
	{name: "connection/no host key check given",
		host:   host{key: keyNone},
		expect: expect{state: status.Aborted, reason: status.ReasonHostKeyMismatch, sent: sentNothing, attempts: 1}},
	{name: "connection/new host key after -n, trusted by the host",
		sim:     openwrttest.Config{Faults: openwrttest.Faults{NewHostKeysAfterReset: true}},
		options: `{"sysupgrade":"n"}`, host: host{key: keyFollows},
		expect: expect{state: status.Success, flashes: 1, sent: sentImage, tested: yes, args: []string{"-n"}, attempts: 1}},
	{name: "connection/new host key after -n, the host pins the old one",
		sim:     openwrttest.Config{Faults: openwrttest.Faults{NewHostKeysAfterReset: true}},
		options: `{"sysupgrade":"n"}`,
		ow:      shortWindow,
		expect: expect{state: status.Failed, reason: status.ReasonUnreachableAfterFlash, flashes: 1, sent: sentImage, tested: yes,
			args: []string{"-n"}, release: newRelease, attempts: 1}},

	// ---- Upload.
	{name: "upload/connection cut during an SFTP upload",
		sim:    openwrttest.Config{SFTP: true, Faults: openwrttest.Faults{DropUploadAfter: 128 << 10}},
		ow:     func(c *openwrt.Config) { c.UploadMethods = []openwrt.UploadMethod{openwrt.UploadSFTP} },
		expect: expect{state: status.Success, flashes: 1, sent: sentImage, via: openwrt.UploadSFTP, tested: yes, attempts: 2}},
	{name: "upload/connection cut during an SCP upload",
		sim:    openwrttest.Config{SCP: true, Faults: openwrttest.Faults{DropUploadAfter: 128 << 10}},
		ow:     func(c *openwrt.Config) { c.UploadMethods = []openwrt.UploadMethod{openwrt.UploadSCP} },
		expect: expect{state: status.Success, flashes: 1, sent: sentImage, via: openwrt.UploadSCP, tested: yes, attempts: 2}},
	{name: "upload/connection cut during a cat upload",
		sim:    openwrttest.Config{Faults: openwrttest.Faults{DropUploadAfter: 128 << 10}},
		ow:     func(c *openwrt.Config) { c.UploadMethods = []openwrt.UploadMethod{openwrt.UploadCat} },
		expect: expect{state: status.Success, flashes: 1, sent: sentImage, via: openwrt.UploadCat, tested: yes, attempts: 2}},
	{name: "upload/connection cut, the cleanup's connection refused, no retry left",
		sim:  openwrttest.Config{Faults: openwrttest.Faults{LowMemoryUntilServicesStopped: true}},
		host: host{slowLink: 256 << 10}, image: bigImage(1 << 20), act: actDropThenRefuse,
		eng: func(c *upgrader.Config) { c.Retry.MaxRetries = -1 },
		expect: expect{state: status.Failed, reason: status.ReasonMaxRetriesExceeded, sent: sentImage, stopped: yes, checked: no,
			tested: no, phase: status.PhaseUpload, attempts: 1},
		defect: "openwrt/memory.go undo gives up after one failed reconnection: the services stay stopped and the partial " +
			"image stays in the device's RAM when no later attempt comes (or when it ends before flashing)"},
	{name: "upload/corrupt once",
		sim:    openwrttest.Config{Faults: openwrttest.Faults{CorruptUploads: 1}},
		expect: expect{state: status.Success, flashes: 1, sent: sentImage, checked: yes, tested: yes, attempts: 2}},
	{name: "upload/corrupt every time",
		sim: openwrttest.Config{Faults: openwrttest.Faults{CorruptUploads: 99}}, eng: func(c *upgrader.Config) { c.Retry.MaxRetries = 1 },
		expect: expect{state: status.Aborted, reason: status.ReasonUploadCorrupt, sent: sentImage, checked: yes, tested: no, attempts: 2}},
	{name: "upload/slow link, per-command timeout shorter than the upload",
		host: host{slowLink: 1 << 20}, image: bigImage(6 << 20),
		ow:     func(c *openwrt.Config) { c.CommandTimeout = 2 * time.Second },
		expect: expect{state: status.Success, flashes: 1, sent: sentImage, tested: yes, attempts: 1, progress: true}},
	{name: "upload/tmp full",
		sim: openwrttest.Config{MemTotal: 8 << 20, MemAvailable: 6 << 20, Files: map[string][]byte{"/tmp/crash.dump": tmpFill}},
		expect: expect{state: status.Aborted, reason: status.ReasonInsufficientMemory, sent: sentCommands, stopped: no, tested: no,
			phase: status.PhaseMemory, attempts: 1}},

	// ---- Memory.
	{name: "memory/low until services are stopped",
		sim:    openwrttest.Config{Faults: openwrttest.Faults{LowMemoryUntilServicesStopped: true}},
		expect: expect{state: status.Success, flashes: 1, sent: sentImage, stopped: yes, tested: yes, attempts: 1}},
	{name: "memory/low, stopping services frees too little",
		sim: openwrttest.Config{MemAvailable: 1 << 20, ServiceMemory: 1, OpkgListsMemory: 1, DropCachesMemory: 1},
		expect: expect{state: status.Aborted, reason: status.ReasonInsufficientMemory, sent: sentCommands, stopped: yes, tested: no,
			phase: status.PhaseMemory, attempts: 1}},
	{name: "memory/low, the services holding it are not in the upgrader's list",
		sim: openwrttest.Config{Faults: openwrttest.Faults{LowMemoryUntilServicesStopped: true}},
		ow:  func(c *openwrt.Config) { c.Services = []string{"uhttpd"} },
		expect: expect{state: status.Aborted, reason: status.ReasonInsufficientMemory, sent: sentCommands, stopped: yes, tested: no,
			phase: status.PhaseMemory, attempts: 1}},

	// ---- Image test and flash.
	{name: "image test/image header names another board",
		image:  bareImage("glinet,gl-ar150"),
		expect: expect{state: status.Aborted, reason: status.ReasonImageInvalid, sent: sentImage, tested: yes, phase: status.PhaseImageTest, attempts: 1}},
	{name: "image test/metadata required, the image has none",
		sim: openwrttest.Config{RequireImageMetadata: true}, image: bareImage(openwrttest.DefaultBoardName),
		expect: expect{state: status.Aborted, reason: status.ReasonImageInvalid, sent: sentImage, tested: yes, phase: status.PhaseImageTest, attempts: 1}},
	{name: "image test/-c on an ext4 root without overlay",
		sim:    openwrttest.Config{Release: openwrttest.ReleaseDescription("23.05"), RootFS: openwrttest.RootFSExt4},
		expect: expect{state: status.Aborted, reason: status.ReasonImageInvalid, sent: sentImage, tested: yes, phase: status.PhaseImageTest, attempts: 1}},
	{name: "image test/compat_version 2.0 refused before the upload",
		image: func() openwrttest.Image {
			im := defaultImage()
			im.CompatVersion, im.CompatMessage = "2.0", "New partition layout"
			return im
		},
		expect: expect{state: status.Aborted, reason: status.ReasonImageInvalid, sent: sentCommands, tested: no, phase: status.PhaseIdentity, attempts: 1}},
	{name: "flash/sysupgrade silent for longer than UpgradeTimeout",
		sim:    openwrttest.Config{Faults: openwrttest.Faults{FlashHang: 2 * time.Second}},
		ow:     func(c *openwrt.Config) { c.UpgradeTimeout = 700 * time.Millisecond },
		expect: expect{state: status.Success, flashes: 1, sent: sentImage, tested: yes, attempts: 1}},
	{name: "flash/exit 246 on 19.07",
		sim:    openwrttest.Config{Release: openwrttest.ReleaseDescription("19.07"), Faults: openwrttest.Faults{FlashFalseError: true}},
		expect: expect{state: status.Success, flashes: 1, sent: sentImage, tested: yes, attempts: 1}},
	{name: "flash/exit 246 with add_provisioning",
		sim: openwrttest.Config{Release: openwrttest.ReleaseDescription("19.07"),
			Faults: openwrttest.Faults{FlashFalseError: true, FalseErrorProvisioning: true}},
		expect: expect{state: status.Success, flashes: 1, sent: sentImage, tested: yes, attempts: 1}},
	{name: "flash/exit 246 with force",
		options: `{"sysupgrade":"c,F"}`,
		expect:  expect{state: status.Success, flashes: 1, sent: sentImage, tested: yes, args: []string{"-c", "-F"}, attempts: 1}},
	{name: "flash/procd refuses the image",
		sim: openwrttest.Config{Faults: openwrttest.Faults{ProcdRefusal: true}},
		expect: expect{state: status.Failed, reason: status.ReasonFlashFailed, sent: sentImage, tested: yes, phase: status.PhaseFlashing,
			attempts: 1}},
	{name: "flash/sysupgrade fails",
		sim: openwrttest.Config{Faults: openwrttest.Faults{FlashError: true, LowMemoryUntilServicesStopped: true}},
		expect: expect{state: status.Failed, reason: status.ReasonFlashFailed, sent: sentImage, tested: yes, stopped: yes,
			phase: status.PhaseFlashing, attempts: 1}},

	// ---- After the flash.
	{name: "after flash/never back",
		sim: openwrttest.Config{Faults: openwrttest.Faults{NeverComeBack: true}},
		ow:  shortWindow,
		expect: expect{state: status.Failed, reason: status.ReasonUnreachableAfterFlash, flashes: 1, sent: sentImage, tested: yes,
			services: svcUnknown, attempts: 1}},
	{name: "after flash/back on the old firmware",
		sim: openwrttest.Config{Faults: openwrttest.Faults{OldFirmwareAfterReboot: true}},
		expect: expect{state: status.Failed, reason: status.ReasonOldFirmwareAfterReboot, flashes: 1, sent: sentImage, tested: yes,
			release: openwrttest.DefaultRelease, attempts: 1}},
	{name: "after flash/sessions dropped, no reboot",
		sim: openwrttest.Config{Faults: openwrttest.Faults{NoReboot: true}},
		ow:  shortWindow,
		expect: expect{state: status.Failed, reason: status.ReasonOldFirmwareAfterReboot, flashes: 1, sent: sentImage, tested: yes,
			release: openwrttest.DefaultRelease, attempts: 1}},
	{name: "after flash/back on a new address",
		sim:    openwrttest.Config{Faults: openwrttest.Faults{ComeBackOnNewAddress: true}},
		expect: expect{state: status.Success, flashes: 1, sent: sentImage, tested: yes, attempts: 1}},
	{name: "after flash/back on a new address the host does not know",
		sim: openwrttest.Config{Faults: openwrttest.Faults{ComeBackOnNewAddress: true}}, host: host{staleAddr: true},
		ow: shortWindow,
		expect: expect{state: status.Failed, reason: status.ReasonUnreachableAfterFlash, flashes: 1, sent: sentImage, tested: yes,
			release: newRelease, attempts: 1}},
	{name: "after flash/another device answers at the address",
		host: host{impostor: true}, act: actImpostor,
		ow: shortWindow,
		expect: expect{state: status.Failed, reason: status.ReasonUnreachableAfterFlash, flashes: 1, sent: sentImage, tested: yes,
			release: newRelease, attempts: 1}},
	{name: "after flash/silent reboot taking most of the reconnect window",
		sim:    openwrttest.Config{RebootDelay: 4 * time.Second, Faults: openwrttest.Faults{SilentReboot: true}},
		ow:     func(c *openwrt.Config) { c.ReconnectWindow = 6 * time.Second },
		expect: expect{state: status.Success, flashes: 1, sent: sentImage, tested: yes, attempts: 1}},

	// ---- Cancel.
	{name: "cancel/while pending",
		act:    actCancelPending,
		expect: expect{state: status.Cancelled, reason: status.ReasonCancelledByUser, sent: sentNothing, cancel: cancelWon}},
	{name: "cancel/while uploading",
		sim:  openwrttest.Config{Faults: openwrttest.Faults{LowMemoryUntilServicesStopped: true}},
		host: host{slowLink: 64 << 10}, image: bigImage(1 << 20), act: actCancelUploading,
		expect: expect{state: status.Cancelled, reason: status.ReasonCancelledByUser, sent: sentImage, stopped: yes, checked: no,
			tested: no, phase: status.PhaseUpload, cancel: cancelWon, attempts: 1}},
	{name: "cancel/while a service is being stopped",
		sim:  openwrttest.Config{Faults: openwrttest.Faults{LowMemoryUntilServicesStopped: true}},
		host: host{slowAnswers: 200 * time.Millisecond}, act: actCancelStopping,
		expect: expect{state: status.Cancelled, reason: status.ReasonCancelledByUser, sent: sentCommands, stopped: yes, tested: no,
			phase: status.PhaseMemory, cancel: cancelWon, attempts: 1},
		defect: "openwrt/memory.go stopServices records a service as stopped only once its stop command answered: " +
			"a stop interrupted by the cancel (or a deadline, a command timeout, a dropped session) is never started again"},
	{name: "cancel/just before the move into flashing",
		sim: openwrttest.Config{Faults: openwrttest.Faults{LowMemoryUntilServicesStopped: true}}, act: actCancelAtFlash(cancelFirst),
		expect: expect{state: status.Cancelled, reason: status.ReasonCancelledByUser, sent: sentImage, stopped: yes, tested: yes,
			phase: status.PhaseImageTest, cancel: cancelWon, attempts: 1}},
	{name: "cancel/just after the move into flashing",
		sim: openwrttest.Config{Faults: openwrttest.Faults{LowMemoryUntilServicesStopped: true}}, act: actCancelAtFlash(flashFirst),
		expect: expect{state: status.Success, flashes: 1, sent: sentImage, stopped: yes, tested: yes, cancel: cancelRefused, attempts: 1}},
	{name: "cancel/racing the move into flashing",
		sim: openwrttest.Config{Faults: openwrttest.Faults{LowMemoryUntilServicesStopped: true}}, act: actCancelAtFlash(together),
		or: []expect{
			{state: status.Cancelled, reason: status.ReasonCancelledByUser, sent: sentImage, stopped: yes, tested: yes,
				phase: status.PhaseImageTest, cancel: cancelWon, attempts: 1},
			{state: status.Success, flashes: 1, sent: sentImage, stopped: yes, tested: yes, cancel: cancelRefused, attempts: 1},
		}},
	{name: "cancel/while the device reboots",
		sim: openwrttest.Config{RebootDelay: time.Second}, act: actCancelRebooting,
		expect: expect{state: status.Success, flashes: 1, sent: sentImage, tested: yes, cancel: cancelRefused, attempts: 1}},

	// ---- Deadline.
	{name: "deadline/passes during the upload",
		sim:  openwrttest.Config{Faults: openwrttest.Faults{LowMemoryUntilServicesStopped: true}},
		host: host{slowLink: 32 << 10}, image: bigImage(1 << 20),
		eng: func(c *upgrader.Config) { c.OperationTimeout = 6 * time.Second },
		expect: expect{state: status.Failed, reason: status.ReasonTimeout, sent: sentImage, stopped: yes, checked: no, tested: no,
			phase: status.PhaseUpload, attempts: 1, afterDeadline: true}},
	{name: "deadline/passes during the reboot, the device comes back",
		sim:    openwrttest.Config{RebootDelay: 8 * time.Second},
		eng:    func(c *upgrader.Config) { c.OperationTimeout, c.VerifyTimeout = 6*time.Second, 30*time.Second },
		expect: expect{state: status.Success, flashes: 1, sent: sentImage, tested: yes, attempts: 1, afterDeadline: true}},
	{name: "deadline/passes during the reboot, the device never comes back",
		sim: openwrttest.Config{Faults: openwrttest.Faults{NeverComeBack: true}},
		eng: func(c *upgrader.Config) { c.OperationTimeout, c.VerifyTimeout = 6*time.Second, 3*time.Second },
		ow:  func(c *openwrt.Config) { c.ReconnectWindow = 10 * time.Second },
		expect: expect{state: status.Failed, reason: status.ReasonTimeout, flashes: 1, sent: sentImage, tested: yes,
			services: svcUnknown, attempts: 1, afterDeadline: true}},

	// ---- Processes and storage (PostgreSQL). The attempts of the rows
	// that kill an engine process are checked by the action, against what
	// the dead process held (a loaded machine may make it lose a lease and
	// start over before the kill).
	{name: "process/engine killed while uploading, another takes over",
		pg: pgShared, image: bigImage(1 << 20), act: actKill(beforeFlash, takeOver),
		expect: expect{state: status.Success, flashes: 1, sent: sentImage, tested: yes}},
	{name: "process/engine killed while uploading, then the operation cancelled",
		pg: pgShared, sim: openwrttest.Config{Faults: openwrttest.Faults{LowMemoryUntilServicesStopped: true}},
		image: bigImage(1 << 20), act: actKill(beforeFlash, cancelThenStart),
		expect: expect{state: status.Cancelled, reason: status.ReasonCancelledByUser, sent: sentImage, stopped: yes, checked: no,
			tested: no, phase: status.PhaseUpload, cancel: cancelWon},
		defect: "nothing restarts the services a killed engine stopped, nor removes its partial upload, when the operation " +
			"then ends before flashing (upgrader/executor.go, openwrt/memory.go cleanup)"},
	{name: "process/engine killed while uploading, the new attempt refuses the image",
		pg: pgShared, sim: openwrttest.Config{RequireImageMetadata: true, Faults: openwrttest.Faults{LowMemoryUntilServicesStopped: true}},
		image: func() openwrttest.Image {
			im := bareImage(openwrttest.DefaultBoardName)()
			im.Size = 1 << 20
			return im
		},
		act: actKill(beforeFlash, takeOver),
		expect: expect{state: status.Aborted, reason: status.ReasonImageInvalid, sent: sentImage, stopped: yes, checked: yes,
			tested: yes, phase: status.PhaseImageTest},
		defect: "the attempt that takes over restarts only the services it stopped itself, not those the killed engine stopped " +
			"(upgrader/executor.go, openwrt/memory.go cleanup)"},
	{name: "process/engine killed while uploading, no engine until the deadline",
		pg: pgShared, sim: openwrttest.Config{Faults: openwrttest.Faults{LowMemoryUntilServicesStopped: true}},
		image: bigImage(1 << 20), eng: func(c *upgrader.Config) { c.OperationTimeout = 6 * time.Second },
		act: actKill(beforeFlash, deadlineThenStart),
		expect: expect{state: status.Failed, reason: status.ReasonTimeout, sent: sentImage, stopped: yes, checked: no,
			tested: no, phase: status.PhaseUpload, afterDeadline: true},
		defect: "an operation interrupted before flashing that ends at its deadline leaves the services its engine stopped " +
			"stopped, and its partial upload in the device's RAM (upgrader/executor.go timeout, upgrader/maintenance.go)"},
	{name: "process/engine killed while the device reboots, another verifies",
		pg: pgShared, sim: openwrttest.Config{RebootDelay: 3 * time.Second}, act: actKill(afterFlash, takeOver),
		expect: expect{state: status.Success, flashes: 1, sent: sentImage, tested: yes}},
	{name: "process/cancel racing the flash on PostgreSQL",
		pg: pgShared, sim: openwrttest.Config{Faults: openwrttest.Faults{LowMemoryUntilServicesStopped: true}},
		act: actCancelAtFlash(together),
		or: []expect{
			{state: status.Cancelled, reason: status.ReasonCancelledByUser, sent: sentImage, stopped: yes, tested: yes,
				phase: status.PhaseImageTest, cancel: cancelWon, attempts: 1},
			{state: status.Success, flashes: 1, sent: sentImage, stopped: yes, tested: yes, cancel: cancelRefused, attempts: 1},
		}},
	{name: "process/PostgreSQL crashes and restarts mid-batch",
		pg: pgOwn, fleet: []member{{n: 6, sim: openwrttest.Config{RebootDelay: 700 * time.Millisecond}}},
		act:    actPostgresRestart,
		expect: expect{state: status.Success, flashes: 1, sent: sentImage, tested: yes},
		batch:  &batchExpect{state: status.BatchSuccess}},

	// ---- Batches.
	{name: "batch/failure threshold pauses the rollout",
		image: bareImage(openwrttest.DefaultBoardName),
		fleet: []member{{role: "bad", n: 2, sim: openwrttest.Config{RequireImageMetadata: true}}, {role: "good", n: 2}},
		act:   actFailureThreshold,
		roles: map[string]expect{
			"bad":  {state: status.Aborted, reason: status.ReasonImageInvalid, sent: sentImage, tested: yes, attempts: 1},
			"good": {state: status.Cancelled, reason: status.ReasonCancelledByUser, sent: sentNothing},
		},
		batch: &batchExpect{hold: store.HoldPaused, pause: status.PauseFailureThreshold, state: status.BatchFailed}},
	{name: "batch/window closes while one device runs",
		fleet: []member{{role: "running", sim: openwrttest.Config{RebootDelay: 1500 * time.Millisecond}}, {role: "waiting", n: 2}},
		act:   actWindowCloses,
		roles: map[string]expect{
			"running": {state: status.Success, flashes: 1, sent: sentImage, tested: yes, attempts: 1},
			"waiting": {state: status.Cancelled, reason: status.ReasonCancelledByUser, sent: sentNothing},
		},
		batch: &batchExpect{hold: store.HoldWindow, state: status.BatchCancelled}},
	{name: "batch/offline device upgraded once back",
		fleet: []member{{role: "online"}, {role: "offline", down: true}},
		act:   actOfflineBack,
		roles: map[string]expect{
			"online":  {state: status.Success, flashes: 1, sent: sentImage, tested: yes, attempts: 1},
			"offline": {state: status.Success, flashes: 1, sent: sentImage, tested: yes, attempts: 1},
		},
		batch: &batchExpect{waiting: 1, state: status.BatchSuccess}},
	{name: "batch/offline longer than Offline.MaxWait",
		fleet: []member{{role: "online"}, {role: "offline", down: true}},
		eng:   func(c *upgrader.Config) { c.Offline.MaxWait = time.Second },
		act:   actBatchToEnd,
		roles: map[string]expect{
			"online":  {state: status.Success, flashes: 1, sent: sentImage, tested: yes, attempts: 1},
			"offline": {state: status.Failed, reason: status.ReasonConnectionFailed, sent: sentNothing},
		},
		batch: &batchExpect{state: status.BatchFailed}},
	{name: "batch/wrong password is aborted, not waited for",
		fleet: []member{{role: "online"}, {role: "refusing", host: host{password: "not-the-password"}}},
		act:   actBatchToEnd,
		roles: map[string]expect{
			"online":   {state: status.Success, flashes: 1, sent: sentImage, tested: yes, attempts: 1},
			"refusing": {state: status.Aborted, reason: status.ReasonAuthFailed, sent: sentNothing, attempts: 1},
		},
		batch: &batchExpect{state: status.BatchFailed}},
	{name: "batch/cancelled in the middle of its second wave",
		fleet: []member{{n: 6, sim: openwrttest.Config{RebootDelay: 600 * time.Millisecond,
			Faults: openwrttest.Faults{LowMemoryUntilServicesStopped: true}}}},
		act: actCancelMidWave,
		or: []expect{
			{state: status.Success, flashes: 1, sent: sentImage, tested: yes, stopped: yes, attempts: 1},
			{state: status.Cancelled, reason: status.ReasonCancelledByUser},
		},
		batch: &batchExpect{state: status.BatchCancelled, atLeast: status.Counts{status.Success: 2, status.Cancelled: 1}}},
}

// TestFaultMatrix runs every row of the matrix, in parallel, and checks each
// with the same checker.
func TestFaultMatrix(t *testing.T) {
	t.Parallel()
	require.GreaterOrEqual(t, len(matrix), 35)
	names := map[string]bool{}
	for i := range matrix {
		r := &matrix[i]
		require.False(t, names[r.name], "two rows named %q", r.name)
		names[r.name] = true
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			if r.defect != "" {
				t.Cleanup(func() {
					if t.Failed() {
						t.Logf("KNOWN DEFECT of the library, not of this row: %s", r.defect)
					}
				})
			}
			h := newHarness(t, r)
			run := r.act.run
			if run == nil {
				run = upgradeAction
			}
			res := run(h)
			check(t, h, res)
		})
	}
}

// ---------------------------------------------------------------------------
// The checker.

// check asserts a row's expectations and the invariants that hold whatever
// the fault.
func check(t *testing.T, h *harness, res result) {
	t.Helper()
	// Attempts still in flight (a cancelled one restarting services) end
	// before the devices are looked at.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, h.eng.Stop(ctx))

	// Every operation of the store ended and holds no lease.
	ops := h.ops()
	require.NotEmpty(t, ops)
	for _, op := range ops {
		assert.True(t, op.State.Terminal(), "operation %s of device %s left %s (%s)", op.ID, op.DeviceID, op.State, op.Phase)
		assert.True(t, op.LeaseExpiresAt.IsZero(), "operation %s left a lease of %s until %s", op.ID, op.LeaseOwner, op.LeaseExpiresAt)
	}
	require.NotEmpty(t, res.outs)
	for _, o := range res.outs {
		op := h.operation(o.opID)
		want, ok := h.row.want(o.node.role, op.State)
		if !assert.True(t, ok, "device %s (role %q) ended %s (%s): no expectation for that; log:\n%s",
			o.node.d.ID, o.node.role, op.State, op.Reason, h.logText(op.ID)) {
			continue
		}
		checkOutcome(t, h, o, op, want)
	}
	if b := h.row.batch; b != nil {
		checkBatch(t, b, res)
	}
}

// want returns the expectation of a device of role that ended in state.
func (r *row) want(role string, state status.State) (expect, bool) {
	if role != "" && r.roles != nil {
		w, ok := r.roles[role]
		return w, ok
	}
	if len(r.or) == 0 {
		return r.expect, true
	}
	for _, w := range r.or {
		if w.state == state {
			return w, true
		}
	}
	return expect{}, false
}

func checkOutcome(t *testing.T, h *harness, o outcome, op store.Operation, w expect) {
	t.Helper()
	dev := o.node.sim()
	path := "/tmp/" + imageName
	logs := func() string { return "operation log:\n" + h.logText(op.ID) }
	label := o.node.d.ID
	if o.node.role != "" {
		label = o.node.role + " " + label
	}

	// The state and reason, exactly.
	assert.Equal(t, w.state, op.State, "%s: state (reason %s); %s", label, op.Reason, logs())
	assert.Equal(t, w.reason, op.Reason, "%s: reason; %s", label, logs())
	if w.attempts != 0 {
		assert.Equal(t, w.attempts, op.Attempt, "%s: attempts", label)
	}
	if w.phase != status.PhaseNone {
		assert.Equal(t, w.phase, op.Phase, "%s: the last phase reached", label)
	}
	if w.afterDeadline {
		assert.False(t, op.Deadline.IsZero(), "%s: the operation has a deadline", label)
		assert.True(t, op.FinishedAt.After(op.Deadline), "%s: ended %s, before its deadline %s", label, op.FinishedAt, op.Deadline)
	}

	// The cancel's answer.
	switch w.cancel {
	case cancelNone:
		assert.False(t, o.cancelled, "%s: the row cancelled", label)
	case cancelWon:
		assert.True(t, o.cancelled, "%s: the row did not cancel", label)
		assert.NoError(t, o.cancelErr, "%s: Cancel", label)
	case cancelRefused:
		assert.True(t, o.cancelled, "%s: the row did not cancel", label)
		assert.ErrorIs(t, o.cancelErr, upgrader.ErrNotCancellable, "%s: Cancel", label)
	}

	// What the device received.
	cmds := dev.Commands()
	methods := uploads(cmds, dev.Config())
	switch w.sent {
	case sentNothing:
		assert.Empty(t, cmds, "%s: the device received something", label)
	case sentCommands:
		assert.NotEmpty(t, cmds, "%s: the device received no command", label)
		assert.Empty(t, methods, "%s: the image reached the device", label)
	case sentImage:
		assert.NotEmpty(t, methods, "%s: the image never reached the device: %q", label, cmds)
	}
	if w.via != "" {
		assert.Contains(t, methods, w.via, "%s: upload method", label)
	}
	for _, c := range cmds {
		if strings.HasPrefix(c, "sftp:put ") || strings.HasPrefix(c, "'cat' >") || strings.HasPrefix(c, "'scp' '-t'") {
			assert.Contains(t, c, path, "%s: the image goes to /tmp", label)
		}
	}
	argv := dev.Executed()
	tests, flashCmds := sysupgrades(argv)
	switch w.tested {
	case yes:
		assert.NotEmpty(t, tests, "%s: sysupgrade --test never ran", label)
	case no:
		assert.Empty(t, tests, "%s: sysupgrade --test ran", label)
	}
	summed := slices.ContainsFunc(argv, func(a []string) bool { return len(a) > 0 && (a[0] == "sha256sum" || a[0] == "md5sum") })
	switch w.checked {
	case yes:
		assert.True(t, summed, "%s: the upload's checksum was never checked on the device", label)
	case no:
		assert.False(t, summed, "%s: the upload's checksum was checked on the device (the upload ended)", label)
	}
	stopped := slices.ContainsFunc(argv, func(a []string) bool {
		return len(a) == 2 && strings.HasPrefix(a[0], "/etc/init.d/") && a[1] == "stop"
	})
	switch w.stopped {
	case yes:
		assert.True(t, stopped, "%s: no service was stopped", label)
	case no:
		assert.False(t, stopped, "%s: a service was stopped", label)
	}
	if w.progress {
		assert.Zero(t, h.rec.lost(), "%s: events were lost", label)
		p := distinct(h.rec.uploadProgress(op.ID))
		assert.GreaterOrEqual(t, len(p), 4, "%s: the upload's progress did not keep moving: %v; %s", label, p, logs())
	}

	// Flashed, at most once, with the image in /tmp and the options asked.
	flashes := dev.Flashes()
	assert.LessOrEqual(t, len(flashes), 1, "%s: flashed more than once: %+v", label, flashes)
	assert.LessOrEqual(t, len(flashCmds), 1, "%s: more than one flash command: %q", label, flashCmds)
	assert.Len(t, flashes, w.flashes, "%s: flashes; %s", label, logs())
	if len(flashes) == 1 {
		args := w.args
		if args == nil {
			args = []string{"-c"}
		}
		f := flashes[0]
		assert.Equal(t, append(append([]string{"-v"}, args...), path), f.Args, "%s: the flash's options", label)
		assert.Equal(t, path, f.Path, "%s: the image flashed from /tmp", label)
		assert.Equal(t, h.image.SHA256, f.SHA256, "%s: the image flashed is the build's", label)
	}
	// Whatever the fault: a flash command only after the image was checked
	// on the device and tested.
	if len(flashCmds) > 0 {
		first := func(tool string) int {
			return slices.IndexFunc(argv, func(a []string) bool { return len(a) > 0 && a[0] == tool })
		}
		fi := slices.IndexFunc(argv, func(a []string) bool { return isFlash(a) })
		ti := slices.IndexFunc(argv, func(a []string) bool { return isTest(a) })
		si := first("sha256sum")
		assert.True(t, si >= 0 && si < fi, "%s: flashed before the upload's checksum was checked", label)
		assert.True(t, ti >= 0 && ti < fi, "%s: flashed before sysupgrade --test", label)
	}
	if op.State == status.Cancelled || op.State == status.Aborted {
		assert.Empty(t, flashCmds, "%s: a flash command reached a device whose operation ended %s", label, op.State)
	}

	// After a cancel that won, nothing but the cleanup.
	if w.cancel == cancelWon {
		for _, a := range argv[min(o.cancelAt, len(argv)):] {
			assert.True(t, isCleanup(a, path), "%s: %q ran after the cancel", label, a)
		}
	}

	// The device's state at the end.
	switch {
	case w.release != "":
		assert.Equal(t, w.release, dev.Release(), "%s: release", label)
	case op.State == status.Success:
		assert.Equal(t, h.sim.Release, dev.Release(), "%s: a success runs the build's release", label)
	case len(flashes) == 0:
		assert.Equal(t, dev.Config().Release, dev.Release(), "%s: not flashed, the release changed", label)
	}
	if len(flashes) == 0 {
		assert.Zero(t, dev.Reboots(), "%s: not flashed, but rebooted", label)
		_, left := dev.File(path)
		assert.False(t, left, "%s: not flashed, the image was left in the device's RAM", label)
	}
	if w.services == svcRunning {
		for svc, running := range dev.Services() {
			assert.True(t, running, "%s: service %s left stopped", label, svc)
		}
	}

	// The image is recorded as installed (on the device, in the store) only
	// after a proven success.
	sum, hasSum := dev.File(openwrt.ChecksumFile)
	recorded := hasSum && strings.TrimSpace(string(sum.Content)) == h.image.SHA256
	df, err := h.st.DeviceFirmware(context.Background(), op.DeviceID)
	installed := err == nil && df.ImageID == h.image.ID && df.Installed
	if err != nil {
		assert.ErrorIs(t, err, store.ErrNotFound, "%s: device firmware", label)
	}
	if op.State == status.Success {
		assert.True(t, recorded, "%s: the device has no record of the image it runs", label)
		assert.True(t, installed, "%s: the store has no record of the image installed", label)
	} else {
		assert.False(t, recorded, "%s: the device records an image it was not proven to run", label)
		assert.False(t, installed, "%s: the store records an image the device was not proven to run", label)
	}
}

func checkBatch(t *testing.T, b *batchExpect, res result) {
	t.Helper()
	if b.hold != store.HoldNone || b.pause != status.PauseNone || b.waiting != 0 {
		if assert.NotNil(t, res.mid, "the batch was not looked at midway") {
			assert.Equal(t, b.hold, res.mid.Hold, "midway: why the batch holds (%s)", res.mid.Summary)
			assert.Equal(t, b.pause, res.mid.PauseReason, "midway: why the batch paused (%s)", res.mid.Summary)
			assert.Equal(t, b.waiting, res.mid.Waiting, "midway: operations waiting for an offline device (%s)", res.mid.Summary)
		}
	}
	if !assert.NotNil(t, res.end, "the batch did not end") {
		return
	}
	assert.Equal(t, b.state, res.end.State, "the batch's end (%s)", res.end.Summary)
	assert.Equal(t, status.DeriveBatchState(res.end.Counts), res.end.State, "the batch's state is derived from its counts")
	for st, n := range b.atLeast {
		assert.GreaterOrEqual(t, res.end.Counts[st], n, "the batch's %s operations (%s)", st, res.end.Summary)
	}
}

// uploads returns the method of every upload the device received (an
// upload by a method the device does not offer is no upload).
func uploads(cmds []string, cfg openwrttest.Config) []openwrt.UploadMethod {
	var out []openwrt.UploadMethod
	for _, c := range cmds {
		switch {
		case strings.HasPrefix(c, "sftp:put ") && cfg.SFTP:
			out = append(out, openwrt.UploadSFTP)
		case strings.HasPrefix(c, "'scp' '-t'") && cfg.SCP:
			out = append(out, openwrt.UploadSCP)
		case strings.HasPrefix(c, "'cat' >"):
			out = append(out, openwrt.UploadCat)
		}
	}
	return out
}

func isTest(a []string) bool {
	return len(a) > 0 && a[0] == "sysupgrade" && (slices.Contains(a, "--test") || slices.Contains(a, "-T"))
}

func isFlash(a []string) bool { return len(a) > 0 && a[0] == "sysupgrade" && !isTest(a) }

// sysupgrades splits the sysupgrade commands a device ran into image tests
// and flash commands.
func sysupgrades(argv [][]string) (tests, flashes [][]string) {
	for _, a := range argv {
		switch {
		case isTest(a):
			tests = append(tests, a)
		case isFlash(a):
			flashes = append(flashes, a)
		}
	}
	return tests, flashes
}

// isCleanup reports whether a is what an attempt runs to undo its changes:
// remove the image, start a service, bring the wireless up.
func isCleanup(a []string, path string) bool {
	switch {
	case slices.Equal(a, []string{"rm", "-f", path}), slices.Equal(a, []string{"wifi", "up"}):
		return true
	case len(a) == 2 && strings.HasPrefix(a[0], "/etc/init.d/") && a[1] == "start":
		return true
	}
	return false
}

func distinct(v []int) []int {
	out := slices.Clone(v)
	slices.Sort(out)
	return slices.Compact(out)
}

// options returns a row's options as the request carries them.
func (r *row) requestOptions() json.RawMessage {
	if r.options == "" {
		return nil
	}
	return json.RawMessage(r.options)
}
