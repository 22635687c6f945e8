// Link-time placeholders for the host imports declared in compat.c that emscripten 3.1.6's JS library
// does not know, so -sERROR_ON_UNDEFINED_SYMBOLS=1 still catches anything unexpected. The generated
// JS glue is discarded: the project's own host (cu/engine) implements these imports.
mergeInto(LibraryManager.library, {
  __syscall_openat: function() { abort('host import'); },
  __syscall_unlinkat: function() { abort('host import'); },
  __syscall_renameat: function() { abort('host import'); },
  _emscripten_date_now: function() { abort('host import'); },
  emscripten_date_now: function() { abort('host import'); },
  _emscripten_system: function() { abort('host import'); },
  _abort_js: function() { abort('host import'); },
  emscripten_memcpy_js: function() { abort('host import'); },
  _emscripten_memcpy_js: function() { abort('host import'); },
});
mergeInto(LibraryManager.library, {
  invoke_vjj: function() { abort('host import'); },
  __asyncjs__weavedrive_open: function() { abort('host import'); },
  __asyncjs__weavedrive_read: function() { abort('host import'); },
  __asyncjs__weavedrive_close: function() { abort('host import'); },
  metering_gasUsed: function() { abort('host import'); },
});
