package vinequeue

import (
	"errors"
	"fmt"
)

// The enumerations of the API print as their names (String) and implement
// encoding.TextMarshaler and TextUnmarshaler, so that JSON, YAML and flag
// values carry "hard" or "sync" rather than numbers.

// ErrUnknownName is returned by UnmarshalText for a name that is not one of
// the type's values.
var ErrUnknownName = errors.New("vinequeue: unknown name")

type enum interface {
	~int
	String() string
}

// parseEnum finds the value among values whose String is text.
func parseEnum[E enum](text []byte, values ...E) (E, error) {
	for _, v := range values {
		if v.String() == string(text) {
			return v, nil
		}
	}
	var zero E
	return zero, fmt.Errorf("%w: %T %q", ErrUnknownName, zero, text)
}

// MarshalText returns the level's name.
func (l Level) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText parses a name MarshalText returns.
func (l *Level) UnmarshalText(b []byte) (err error) {
	*l, err = parseEnum(b, LevelNormal, LevelSoft, LevelHard)
	return err
}

// MarshalText returns the policy's name.
func (p Policy) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText parses a name MarshalText returns.
func (p *Policy) UnmarshalText(b []byte) (err error) {
	*p, err = parseEnum(b, PolicyDefault, Reject, Spill, Block)
	return err
}

// MarshalText returns the mode's name.
func (m WALMode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText parses a name MarshalText returns.
func (m *WALMode) UnmarshalText(b []byte) (err error) {
	*m, err = parseEnum(b, Overflow, Periodic, Sync)
	return err
}

// MarshalText returns the compression's name.
func (c Compression) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText parses a name MarshalText returns.
func (c *Compression) UnmarshalText(b []byte) (err error) {
	*c, err = parseEnum(b, Snappy, LZ4, NoCompression)
	return err
}

// MarshalText returns the measure's name.
func (m Measure) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText parses a name MarshalText returns.
func (m *Measure) UnmarshalText(b []byte) (err error) {
	*m, err = parseEnum(b, MeasureAuto, MeasureProcess, MeasureQueue)
	return err
}
