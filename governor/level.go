package governor

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Level is the memory pressure level. The zero value is LevelNormal.
type Level int32

const (
	// LevelNormal: below the soft threshold (or, coming down, below it minus the
	// hysteresis margin). The queue runs unhindered.
	LevelNormal Level = iota
	// LevelSoft: between soft and hard. The queue's slow path waits Delay() and
	// a rate-limited warning is logged.
	LevelSoft
	// LevelHard: at or above hard (or, coming down, above hard minus the
	// margin). The queue applies its Policy: Reject, Spill or Block.
	LevelHard
)

// String returns the level's name.
func (l Level) String() string {
	switch l {
	case LevelNormal:
		return "normal"
	case LevelSoft:
		return "soft"
	case LevelHard:
		return "hard"
	}
	return "Level(" + strconv.Itoa(int(l)) + ")"
}

// ErrUnknownLevel is returned by MarshalText and UnmarshalText for a value
// or name that is not one of the three levels.
var ErrUnknownLevel = errors.New("governor: unknown level")

// MarshalText returns the level's name ("normal", "soft", "hard"), so a
// Level prints as a name in JSON and other text encodings.
func (l Level) MarshalText() ([]byte, error) {
	if l < LevelNormal || l > LevelHard {
		return nil, fmt.Errorf("%w: %d", ErrUnknownLevel, int32(l))
	}
	return []byte(l.String()), nil
}

// UnmarshalText parses a name written by MarshalText (ASCII case ignored).
func (l *Level) UnmarshalText(text []byte) error {
	for c := LevelNormal; c <= LevelHard; c++ {
		if strings.EqualFold(string(text), c.String()) {
			*l = c
			return nil
		}
	}
	return fmt.Errorf("%w: %q", ErrUnknownLevel, text)
}
