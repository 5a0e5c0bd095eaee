package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// flagSet is a flag.FlagSet that also keeps what the help shows of each
// flag: its argument's name, its default and an example. Registering a flag
// and documenting it is one call, so the help cannot miss a flag.
type flagSet struct {
	fs    *flag.FlagSet
	flags []*flagDoc
}

// flagDoc is the help of one flag.
type flagDoc struct {
	name    string // without dashes
	arg     string // "HOST"; "" for a boolean flag
	usage   string
	def     string // the default as shown
	example string // a complete example, "--host 192.0.2.10"
}

func newFlagSet(name string) *flagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &flagSet{fs: fs}
}

func (f *flagSet) doc(name, arg, def, example, usage string) {
	if def == "none" && strings.Contains(usage, "Required.") {
		def = "none (required)"
	}
	f.flags = append(f.flags, &flagDoc{name: name, arg: arg, usage: usage, def: def, example: example})
}

// showDefault replaces what the help shows as flag name's default, for
// defaults that are not a value ("one wave", "no limit").
func (f *flagSet) showDefault(name, shown string) {
	for _, d := range f.flags {
		if d.name == name {
			d.def = shown
		}
	}
}

func shownString(def string) string {
	if def == "" {
		return "none"
	}
	return def
}

// String defines a string flag. A required flag says so in its usage and
// has no default.
func (f *flagSet) String(p *string, name, arg, def, example, usage string) {
	f.fs.StringVar(p, name, def, usage)
	f.doc(name, arg, shownString(def), example, usage)
}

// Int defines an int flag.
func (f *flagSet) Int(p *int, name, arg string, def int, example, usage string) {
	f.fs.IntVar(p, name, def, usage)
	f.doc(name, arg, strconv.Itoa(def), example, usage)
}

// Bool defines a boolean flag (false by default).
func (f *flagSet) Bool(p *bool, name, example, usage string) {
	f.fs.BoolVar(p, name, false, usage)
	f.doc(name, "", "false", example, usage)
}

// Duration defines a duration flag.
func (f *flagSet) Duration(p *time.Duration, name string, def time.Duration, example, usage string) {
	f.fs.DurationVar(p, name, def, usage)
	f.doc(name, "D", def.String(), example, usage)
}

// Var defines a flag of a custom type; def is the default as shown.
func (f *flagSet) Var(v flag.Value, name, arg, def, example, usage string) {
	f.fs.Var(v, name, usage)
	f.doc(name, arg, shownString(def), example, usage)
}

// parse parses args. It returns flag.ErrHelp when help was asked for
// (-h, -help, --help anywhere before an error), and otherwise an error
// worded for a person ("unknown flag --insecure").
func (f *flagSet) parse(args []string) error {
	err := f.fs.Parse(args)
	if err == nil && f.fs.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q (flags start with --)", f.fs.Arg(0))
	}
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "--help" || a == "-help" || a == "--h" {
			return flag.ErrHelp
		}
	}
	msg := err.Error()
	switch {
	case strings.HasPrefix(msg, "flag provided but not defined: "):
		msg = "unknown flag -" + strings.TrimPrefix(msg, "flag provided but not defined: ")
	case strings.HasPrefix(msg, "flag needs an argument: "):
		msg = "flag -" + strings.TrimPrefix(msg, "flag needs an argument: ") + " needs a value"
	case strings.HasPrefix(msg, "invalid value "), strings.HasPrefix(msg, "invalid boolean value "):
		msg = strings.Replace(msg, " for flag -", " for flag --", 1)
	}
	return errors.New(msg)
}

// set reports whether the flag was given on the command line.
func (f *flagSet) set(name string) bool {
	found := false
	f.fs.Visit(func(fl *flag.Flag) {
		if fl.Name == name {
			found = true
		}
	})
	return found
}

// writeHelp writes the flags' help, one block per flag:
//
//	--port N
//	    SSH port.
//	    Default: 22. Example: --port 2222
func (f *flagSet) writeHelp(w io.Writer) {
	for _, d := range f.flags {
		head := "--" + d.name
		if d.arg != "" {
			head += " " + d.arg
		}
		fmt.Fprintf(w, "  %s\n", head)
		for _, line := range wrap(d.usage, 72) {
			fmt.Fprintf(w, "      %s\n", line)
		}
		fmt.Fprintf(w, "      Default: %s. Example: %s\n", d.def, d.example)
	}
}

// wrap splits text into lines of at most width characters, at spaces.
func wrap(text string, width int) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(text) {
		if line != "" && len(line)+1+len(word) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += word
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}

// stringList is a flag that may be repeated: --image A --image B.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }

func (s *stringList) Set(v string) error {
	if strings.TrimSpace(v) == "" {
		return errors.New("empty value")
	}
	*s = append(*s, v)
	return nil
}
