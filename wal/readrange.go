package wal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// errStopRange ends a segment scan once the range is done.
var errStopRange = errors.New("wal: range done")

// ReadRange calls fn, in id order, for every data record with from <= id <=
// to that is on disk, with its decompressed payload (valid only during the
// call). It reads the segment files through their own read-only mappings,
// so it can run while the Log appends; a record still being written is not
// reported (its checksum does not verify yet), so read only ids whose Append
// or Write has returned. This is how a queue reads back what it spilled.
func (l *Log) ReadRange(from, to uint64, fn func(id uint64, payload []byte) error) error {
	if l.isClosed.Load() {
		return ErrClosed
	}
	if from > to {
		return nil
	}
	ents, err := os.ReadDir(l.dir)
	if err != nil {
		return fmt.Errorf("wal: read range: %w", err)
	}
	var segs []segmentFile
	for _, e := range ents {
		if id, ok := parseSegmentName(e.Name()); ok {
			segs = append(segs, segmentFile{name: e.Name(), firstID: id})
		}
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].firstID < segs[j].firstID })
	for i, s := range segs {
		if s.firstID > to {
			break
		}
		if i+1 < len(segs) && segs[i+1].firstID <= from {
			continue // every id of s is below from
		}
		_, err := ReadSegment(filepath.Join(l.dir, s.name), func(r Record) error {
			if r.Gap || r.ID < from {
				return nil
			}
			if r.ID > to {
				return errStopRange
			}
			return fn(r.ID, r.Payload)
		})
		if errors.Is(err, errStopRange) {
			return nil
		}
		if errors.Is(err, os.ErrNotExist) {
			continue // deleted meanwhile: all of it was acknowledged
		}
		if err != nil {
			return err
		}
	}
	return nil
}
