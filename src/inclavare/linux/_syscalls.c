/*
 * The Linux system calls that Python's os module does not offer.
 *
 * rune runs several times per container, and `import ctypes` alone costs about as much as
 * everything else rune imports; this small extension module loads in a fraction of that.
 * Each function raises OSError (with errno) on failure; the Python wrapper module
 * inclavare.linux.syscalls adds what was being done to the message.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <malloc.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static PyObject *fail(void)
{
    return PyErr_SetFromErrno(PyExc_OSError);
}

/* An optional path argument: None becomes NULL. */
static int optional_path(PyObject *object, void *address)
{
    PyObject **result = (PyObject **)address;
    if (object == NULL) { /* cleanup call */
        Py_CLEAR(*result);
        return 1;
    }
    if (object == Py_None) {
        *result = NULL;
        return 1;
    }
    if (!PyUnicode_FSConverter(object, result))
        return 0;
    return Py_CLEANUP_SUPPORTED;
}

static const char *bytes_or_null(PyObject *bytes)
{
    return bytes == NULL ? NULL : PyBytes_AS_STRING(bytes);
}

static PyObject *py_mount(PyObject *self, PyObject *args)
{
    PyObject *source = NULL, *target = NULL, *fstype = NULL, *data = NULL;
    unsigned long flags;
    if (!PyArg_ParseTuple(args, "O&O&O&kO&", optional_path, &source, optional_path, &target,
                          optional_path, &fstype, &flags, optional_path, &data))
        return NULL;
    int result;
    Py_BEGIN_ALLOW_THREADS
    result = mount(bytes_or_null(source), bytes_or_null(target), bytes_or_null(fstype), flags,
                   bytes_or_null(data));
    Py_END_ALLOW_THREADS
    Py_XDECREF(source);
    Py_XDECREF(target);
    Py_XDECREF(fstype);
    Py_XDECREF(data);
    if (result < 0)
        return fail();
    Py_RETURN_NONE;
}

static PyObject *py_umount2(PyObject *self, PyObject *args)
{
    PyObject *target = NULL;
    int flags;
    if (!PyArg_ParseTuple(args, "O&i", PyUnicode_FSConverter, &target, &flags))
        return NULL;
    int result = umount2(PyBytes_AS_STRING(target), flags);
    Py_DECREF(target);
    if (result < 0)
        return fail();
    Py_RETURN_NONE;
}

static PyObject *py_pivot_root(PyObject *self, PyObject *args)
{
    PyObject *new_root = NULL, *put_old = NULL;
    if (!PyArg_ParseTuple(args, "O&O&", PyUnicode_FSConverter, &new_root, PyUnicode_FSConverter,
                          &put_old))
        return NULL;
    long result = syscall(SYS_pivot_root, PyBytes_AS_STRING(new_root), PyBytes_AS_STRING(put_old));
    Py_DECREF(new_root);
    Py_DECREF(put_old);
    if (result < 0)
        return fail();
    Py_RETURN_NONE;
}

static PyObject *py_unshare(PyObject *self, PyObject *args)
{
    int flags;
    if (!PyArg_ParseTuple(args, "i", &flags))
        return NULL;
    if (unshare(flags) < 0)
        return fail();
    Py_RETURN_NONE;
}

static PyObject *py_setns(PyObject *self, PyObject *args)
{
    int fd, nstype;
    if (!PyArg_ParseTuple(args, "ii", &fd, &nstype))
        return NULL;
    if (setns(fd, nstype) < 0)
        return fail();
    Py_RETURN_NONE;
}

static PyObject *py_sethostname(PyObject *self, PyObject *args)
{
    const char *name;
    Py_ssize_t length;
    if (!PyArg_ParseTuple(args, "s#", &name, &length))
        return NULL;
    if (sethostname(name, (size_t)length) < 0)
        return fail();
    Py_RETURN_NONE;
}

static PyObject *py_setdomainname(PyObject *self, PyObject *args)
{
    const char *name;
    Py_ssize_t length;
    if (!PyArg_ParseTuple(args, "s#", &name, &length))
        return NULL;
    if (setdomainname(name, (size_t)length) < 0)
        return fail();
    Py_RETURN_NONE;
}

static PyObject *py_prctl(PyObject *self, PyObject *args)
{
    int option;
    unsigned long arg2 = 0, arg3 = 0;
    if (!PyArg_ParseTuple(args, "i|kk", &option, &arg2, &arg3))
        return NULL;
    int result = prctl(option, arg2, arg3, 0UL, 0UL);
    if (result < 0)
        return fail();
    return PyLong_FromLong(result);
}

static PyObject *py_capset(PyObject *self, PyObject *args)
{
    unsigned long long effective, permitted, inheritable;
    if (!PyArg_ParseTuple(args, "KKK", &effective, &permitted, &inheritable))
        return NULL;
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    for (int index = 0; index < 2; index++) {
        data[index].effective = (__u32)(effective >> (32 * index));
        data[index].permitted = (__u32)(permitted >> (32 * index));
        data[index].inheritable = (__u32)(inheritable >> (32 * index));
    }
    if (syscall(SYS_capset, &header, data) < 0)
        return fail();
    Py_RETURN_NONE;
}

static PyObject *py_join_session_keyring(PyObject *self, PyObject *args)
{
    const char *name;
    if (!PyArg_ParseTuple(args, "s", &name))
        return NULL;
    const int keyctl_join_session_keyring = 1;
    long serial = syscall(SYS_keyctl, keyctl_join_session_keyring, name);
    if (serial < 0)
        return fail();
    return PyLong_FromLong(serial);
}

/*
 * Every signal back to its default disposition and none blocked, with the raw system calls:
 * the C library refuses to touch the two real-time signals it reserves for itself, and a
 * disposition of "ignored" inherited from rune's caller would survive execve.
 */
struct kernel_sigaction {
    void *handler;
    unsigned long flags;
    void *restorer;
    unsigned long mask;
};

static PyObject *py_reset_signals(PyObject *self, PyObject *args)
{
    struct kernel_sigaction default_action = {0};
    unsigned long empty = 0;
    for (int number = 1; number <= 64; number++) {
        if (number == SIGKILL || number == SIGSTOP)
            continue;
        if (syscall(SYS_rt_sigaction, number, &default_action, NULL, sizeof(unsigned long)) < 0)
            return fail();
    }
    if (syscall(SYS_rt_sigprocmask, SIG_SETMASK, &empty, NULL, sizeof(unsigned long)) < 0)
        return fail();
    Py_RETURN_NONE;
}

/* Give the C heap's free memory at its top and in its free lists back to the kernel. */
static PyObject *py_malloc_trim(PyObject *self, PyObject *args)
{
    return PyBool_FromLong(malloc_trim(0));
}

static PyMethodDef methods[] = {
    {"mount", py_mount, METH_VARARGS, "mount(source, target, fstype, flags, data)"},
    {"umount2", py_umount2, METH_VARARGS, "umount2(target, flags)"},
    {"pivot_root", py_pivot_root, METH_VARARGS, "pivot_root(new_root, put_old)"},
    {"unshare", py_unshare, METH_VARARGS, "unshare(flags)"},
    {"setns", py_setns, METH_VARARGS, "setns(fd, nstype)"},
    {"sethostname", py_sethostname, METH_VARARGS, "sethostname(name)"},
    {"setdomainname", py_setdomainname, METH_VARARGS, "setdomainname(name)"},
    {"prctl", py_prctl, METH_VARARGS, "prctl(option, arg2=0, arg3=0) -> int"},
    {"capset", py_capset, METH_VARARGS, "capset(effective, permitted, inheritable)"},
    {"malloc_trim", py_malloc_trim, METH_NOARGS, "malloc_trim() -> bool"},
    {"reset_signals", py_reset_signals, METH_NOARGS,
     "reset_signals(): every signal to its default disposition, none blocked"},
    {"join_session_keyring", py_join_session_keyring, METH_VARARGS,
     "join_session_keyring(name) -> serial of the new session keyring"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_syscalls",
    .m_doc = "Linux system calls missing from os.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__syscalls(void)
{
    return PyModule_Create(&module);
}
