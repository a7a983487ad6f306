# The JSON boundary: every encode and decode in pystate goes through here.
cdef bytes encode(object value)
cdef bytes encode_trusted(object value)
cdef object decode(object data)
cdef object to_json(object value, Py_ssize_t index, str field)
cdef object copy_containers(object value)
