// Package layer applies OCI image layers to a root filesystem directory, confining every path to it.
package layer
