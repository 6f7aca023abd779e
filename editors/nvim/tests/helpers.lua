-- Shared bootstrap of the headless test scripts (run.lua, real.lua, readme.lua): puts the
-- plugin on the runtimepath, loads it, and gives the test directory, `check` and `finish`.
-- Loaded with dofile from the script's own folder (see run.lua), so it works from any cwd.
local M = {}

-- Record every use of a deprecated Neovim API, warned about or not yet ("soft"), from
-- now on. Run it first: readme.lua's nvim does it with --cmd, before the init file.
function M.watch_deprecations()
  if _G.gpo_deprecations then
    return
  end
  _G.gpo_deprecations = {}
  local deprecate = vim.deprecate
  vim.deprecate = function(name, ...)
    table.insert(_G.gpo_deprecations, tostring(name))
    return deprecate(name, ...)
  end
end

-- The clients attached to a buffer, by id, without the API deprecated in 0.10+.
function M.attached(bufnr)
  if vim.lsp.get_clients then
    local out = {}
    for _, client in ipairs(vim.lsp.get_clients({ bufnr = bufnr })) do
      out[client.id] = client
    end
    return out
  end
  return vim.lsp.buf_get_clients(bufnr)
end

-- `check` and `finish` for a test named `name` (in the "all checks passed" line).
-- finish() fails on any deprecated API used, or "deprecated" in :messages.
function M.checker(name)
  M.watch_deprecations()
  local failures = {}
  local function check(condition, message)
    if not condition then
      table.insert(failures, message)
    end
    return condition
  end
  -- The API the plugin chose for this Neovim, as the Python side expects it.
  local expected = os.getenv('GPO_EXPECT_API')
  local api = require('gpo').api
  check(expected == nil or api == expected,
    'plugin API ' .. api .. ', expected ' .. tostring(expected))
  -- Quit nvim: exit code 1 and the failures on stderr, or 0 when every check passed.
  local function finish()
    check(#_G.gpo_deprecations == 0,
      'deprecated Neovim API used: ' .. table.concat(_G.gpo_deprecations, ', '))
    local messages = vim.fn.execute('messages')
    check(not messages:lower():find('deprecated', 1, true), ':messages: ' .. messages)
    if #failures > 0 then
      local v = vim.version()
      io.stderr:write(('FAILED on Neovim %d.%d.%d:\n  '):format(v.major, v.minor, v.patch)
        .. table.concat(failures, '\n  ') .. '\n')
      vim.cmd('cquit 1')
    else
      io.stderr:write(name .. ': all checks passed\n')
      vim.cmd('qall!')
    end
  end
  return check, finish
end

-- Set up the plugin; `name` goes in the "all checks passed" line.
-- Returns the test directory (GPO_TEST_DIR), check(condition, message) and finish().
function M.start(name)
  M.watch_deprecations()
  local here = vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h')
  vim.opt.runtimepath:prepend(vim.fn.fnamemodify(here, ':h'))
  vim.cmd('filetype on')
  vim.cmd('runtime! plugin/gpo.lua')

  local dir = assert(os.getenv('GPO_TEST_DIR'), 'GPO_TEST_DIR')
  local check, finish = M.checker(name)
  return dir, check, finish
end

return M
