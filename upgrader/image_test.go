package upgrader_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/imagemap"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
	"github.com/fwupgrader/fwupgrader/upgrader/upgradertest"
)

// withMetadata returns body with fwtool metadata md appended.
func withMetadata(t *testing.T, body string, md *imagemap.Metadata) []byte {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, imagemap.AppendMetadata(&buf, strings.NewReader(body), md))
	return buf.Bytes()
}

// CreateImage refuses what cannot be a good image and accepts real fwtool
// metadata whole, as sysupgrade reads it.
func TestCreateImageChecksContent(t *testing.T) {
	t.Parallel()
	b := setup(t, &upgradertest.Fake{}, nil)
	ctx := context.Background()
	create := func(typ string, content []byte) (store.Image, error) {
		return b.eng.UploadImage(ctx, store.Image{BuildID: b.build.ID, Type: typ}, bytes.NewReader(content))
	}
	before, err := b.st.ListImages(ctx, store.ImageFilter{})
	require.NoError(t, err)

	_, err = create(testType+".empty", nil)
	assert.ErrorIs(t, err, upgrader.ErrImageInvalid, "an empty image")

	good := withMetadata(t, "firmware body", &imagemap.Metadata{MetadataVersion: "1.1", CompatVersion: "1.0",
		SupportedDevices: []string{testBoard}})
	badCRC := bytes.Clone(good)
	badCRC[3] ^= 0xff // the body changed after the trailer was computed
	_, err = create(testType+".crc", badCRC)
	assert.ErrorIs(t, err, upgrader.ErrImageInvalid, "a bad CRC")
	assert.ErrorIs(t, err, imagemap.ErrCorruptMetadata)

	corrupt := withMetadata(t, "firmware body", &imagemap.Metadata{Raw: []byte(`{"supported_devices": 12}`)})
	_, err = create(testType+".corrupt", corrupt)
	assert.ErrorIs(t, err, upgrader.ErrImageInvalid, "corrupt metadata")

	after, err := b.st.ListImages(ctx, store.ImageFilter{})
	require.NoError(t, err)
	assert.Len(t, after, len(before), "nothing stored for refused images")

	// A compat 1.1 image (the DSA migration): supported_devices is a long
	// message for older releases, the boards are in new_supported_devices.
	msg := "Please check the documentation. Config cannot be migrated from swconfig to DSA; " +
		"to upgrade, use sysupgrade -n (the configuration is not kept) or force the upgrade with -F after a manual migration"
	require.Greater(t, len(msg), store.MaxNameLen)
	dsa := withMetadata(t, "dsa firmware", &imagemap.Metadata{MetadataVersion: "1.1", CompatVersion: "1.1",
		CompatMessage: "Config cannot be migrated from swconfig to DSA", SupportedDevices: []string{msg},
		NewSupportedDevices: []string{"vendor,new-board"}})
	im, err := create("unknown-board-squashfs-sysupgrade.bin", dsa)
	require.NoError(t, err, "real metadata is accepted whole")
	assert.Equal(t, []string{"vendor,new-board"}, im.Boards)
}
