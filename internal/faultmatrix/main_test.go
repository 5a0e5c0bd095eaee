package faultmatrix_test

import (
	"flag"
	"os"
	"strconv"
	"testing"

	"github.com/fwupgrader/fwupgrader/storeadapters/postgres/pgtest"
)

// rowsAtOnce is how many rows run at once unless -test.parallel says
// otherwise. Most of a row's time is spent waiting for simulated reboots,
// reconnection windows and deadlines, not on the CPU: the default of
// -test.parallel (GOMAXPROCS) would run them almost one after the other.
const rowsAtOnce = 16

func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		_ = flag.Set("test.parallel", strconv.Itoa(rowsAtOnce))
	}
	code := m.Run()
	pgtest.Stop()
	os.Exit(code)
}
