// Package lifeboat is a node-local pull-through cache for container images.
// The binary is cmd/lifeboat; see README.md.
package lifeboat
