package openwrt

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseMeminfoFallbacks(t *testing.T) {
	t.Parallel()
	// 12.09 / 14.07 kernels: no MemAvailable.
	n, field, ok := parseMeminfo("MemTotal: 29000 kB\nMemFree: 1000 kB\nBuffers: 500 kB\nCached: 8000 kB\nShmem: 3000 kB\n")
	require.True(t, ok)
	assert.Equal(t, "MemFree+Buffers+Cached-Shmem", field)
	assert.Equal(t, int64((1000+500+8000-3000)*1024), n, "tmpfs pages (Shmem) cannot be freed")
	n, field, ok = parseMeminfo("MemTotal: 29000 kB\nMemFree: 1000 kB\n")
	require.True(t, ok)
	assert.Equal(t, "MemFree", field)
	assert.Equal(t, int64(1000*1024), n)
	_, _, ok = parseMeminfo("garbage")
	assert.False(t, ok)
}

func TestParseDfAvailable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		out  string
		want int64
		ok   bool
	}{
		{"Filesystem           1K-blocks      Used Available Use% Mounted on\ntmpfs                    61440      1234     60206   2% /tmp\n", 60206 * 1024, true},
		{"Filesystem 1K-blocks Used Available Use% Mounted on\n/dev/mapper/a-very-long-name\n 1000 10 990 1% /tmp\n", 990 * 1024, true},
		{"df: /tmp: No such file or directory\n", 0, false},
		{"", 0, false},
	} {
		got, ok := parseDfAvailable(tc.out)
		assert.Equal(t, tc.ok, ok, tc.out)
		assert.Equal(t, tc.want, got, tc.out)
	}
}

func TestFlashOutcomeRecognition(t *testing.T) {
	t.Parallel()
	handover := `Command failed: ubus call system sysupgrade { "prefix": "\/tmp\/root", "path": "\/tmp\/x.bin", "force": true, "command": "\/lib\/upgrade\/do_stage2", "options": { "save_partitions": 0 } } (Connection failed)`
	assert.True(t, isFalseFlashError(handover))
	assert.False(t, isProcdRefusal(handover))
	refused := strings.Replace(handover, "(Connection failed)", "(Not supported)", 1)
	assert.False(t, isFalseFlashError(refused), "procd's refusal is not the hand-over")
	assert.True(t, isProcdRefusal(refused))
	assert.False(t, isFalseFlashError("Command failed: ubus call system sysupgrade {} (Connection failed)"), "no do_stage2")
}

// A -v listing longer than any cap must keep its end: the verdict is there.
func TestCapBufferKeepsTheEnd(t *testing.T) {
	t.Parallel()
	b := &capBuffer{max: 1024}
	for i := range 5000 {
		_, _ = b.Write([]byte("saving /etc/config/file" + strings.Repeat("x", i%7) + "\n"))
	}
	_, _ = b.Write([]byte("Command failed: ... (Connection failed)\n"))
	s := b.String()
	assert.True(t, strings.HasPrefix(s, "saving /etc/config/file\n"), "the start is kept")
	assert.True(t, strings.HasSuffix(s, "(Connection failed)\n"), "the end is kept")
	assert.Contains(t, s, "bytes not kept")
	assert.LessOrEqual(t, len(s), 1024+64)
	small := &capBuffer{max: 1024}
	_, _ = small.Write([]byte("hello"))
	assert.Equal(t, "hello", small.String())
}

func TestIgnoreMinorCompatOption(t *testing.T) {
	t.Parallel()
	o, err := ParseOptions(json.RawMessage(`{"sysupgrade":"c","ignore_minor_compat_version":true}`))
	require.NoError(t, err)
	assert.Equal(t, []string{"-c", "--ignore-minor-compat-version"}, o.Flags())
	back, err := ParseOptions(o.JSON())
	require.NoError(t, err)
	assert.Equal(t, o, back)
	_, err = ParseOptions(json.RawMessage(`{"ignore_minor_compat_version":"yes"}`))
	assert.ErrorIs(t, err, ErrInvalidOptions)
}
