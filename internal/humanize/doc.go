// Package humanize renders what racker and postroj tell people: sizes in
// one unit system, messages folded onto one line, and the last lines of a
// command's output as a terminal would have shown them.
package humanize
