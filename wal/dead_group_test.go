package wal

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A group of dead letters is stored whole or not at all: a refusal part
// way through (MaxBytes here, a full disk alike) or a failure after the
// files are written leaves no file, no .tmp, no id used and DeadBytes as
// it was; the next Open counts nothing lost.
func TestDeadLetterGroupWholeOrNone(t *testing.T) {
	fail := errors.New("injected")
	var injecting bool
	dir := t.TempDir()
	opts := Options{SegmentSize: 64 << 10, MaxBytes: 256 << 10, Compression: NoCompression, noSpare: true,
		fault: func(step string) error {
			if injecting && step == "dlq-group-written" {
				return fail
			}
			return nil
		}}
	l := openT(t, dir, opts)
	rng := rand.New(rand.NewPCG(2, 2))
	big := make([]byte, 60000)
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	p := AppendFrame(nil, big)
	part := DeadPart{Payload: p, Meta: DeadMeta{Reason: "r"}}

	id, err := l.DeadLetter(p, DeadMeta{})
	require.NoError(t, err)
	require.Equal(t, uint64(1), id)
	before := l.Stats()

	// Three more fit beside the first and the segment, not four.
	_, err = l.DeadLetterGroup([]DeadPart{part, part, part, part})
	require.ErrorIs(t, err, ErrFull)
	checkUnchanged := func(what string) {
		t.Helper()
		st := l.Stats()
		assert.Equal(t, before.DeadLetters, st.DeadLetters, what)
		assert.Equal(t, before.DeadBytes, st.DeadBytes, what)
		dls, err := l.DeadLetters()
		require.NoError(t, err)
		assert.Equal(t, []uint64{1}, deadIDs(dls), what)
		ents, err := os.ReadDir(filepath.Join(dir, deadDirName))
		require.NoError(t, err)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		assert.ElementsMatch(t, []string{ackFileName, deadFileName(1)}, names, what)
	}
	checkUnchanged("refused by MaxBytes part way")

	injecting = true
	_, err = l.DeadLetterGroup([]DeadPart{part, part})
	require.ErrorIs(t, err, fail)
	injecting = false
	checkUnchanged("failed once written")

	// The ids were not used: the next group takes 2, 3, 4.
	ids, err := l.DeadLetterGroup([]DeadPart{part, part, part})
	require.NoError(t, err)
	assert.Equal(t, []uint64{2, 3, 4}, ids)
	dls, err := l.DeadLetters()
	require.NoError(t, err)
	assert.Equal(t, []uint64{1, 2, 3, 4}, deadIDs(dls))
	for _, d := range dls[1:] {
		assert.Equal(t, "r", d.Reason)
		assert.Equal(t, 1, d.Items)
	}
	require.NoError(t, l.Close())

	l = openT(t, dir, Options{SegmentSize: 64 << 10})
	defer l.Close()
	assert.Zero(t, l.Stats().DeadCorrupt)
	assert.Equal(t, 4, l.Stats().DeadLetters)

	// A part DeadLetter would refuse refuses the group before anything is
	// written.
	_, err = l.DeadLetterGroup([]DeadPart{part, {Payload: p, Meta: DeadMeta{Keys: []uint64{1, 2}}}})
	require.Error(t, err)
	assert.Equal(t, 4, l.Stats().DeadLetters)
}
