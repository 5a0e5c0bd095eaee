package openwrt

import "strings"

// shellQuote returns s as one single-quoted POSIX shell word: the shell
// passes it through literally, whatever it contains (spaces, ;, $(...),
// backquotes, newlines). A single quote inside s is closed, escaped with a
// backslash and reopened.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// command returns a shell command line made of args, each one quoted with
// shellQuote. It is the only way this package builds the words of a command
// sent to a device; shell operators (>, &&) are added by the callers as
// constants between quoted words.
func command(args ...string) string {
	var b strings.Builder
	for i, a := range args {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(shellQuote(a))
	}
	return b.String()
}

// redirect returns cmd with its standard output sent to the file path
// (quoted): cmd > 'path'.
func redirect(cmd, path string) string {
	return cmd + " > " + shellQuote(path)
}
