package charts

// The Kubernetes API types the rendered objects are decoded into.

import (
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

const (
	resCPU    = corev1.ResourceCPU
	resMemory = corev1.ResourceMemory
)

type (
	daemonSet          = appsv1.DaemonSet
	configMap          = corev1.ConfigMap
	serviceAccount     = corev1.ServiceAccount
	service            = corev1.Service
	container          = corev1.Container
	podSecurityContext = corev1.PodSecurityContext
	volume             = corev1.Volume
	job                = batchv1.Job
	role               = rbacv1.Role
	roleBinding        = rbacv1.RoleBinding
	secret             = corev1.Secret
	networkPolicy      = networkingv1.NetworkPolicy
)
