-- Shared bootstrap of the headless test scripts (run.lua, real.lua): puts the plugin on
-- the runtimepath, loads it, and gives the test directory, `check` and `finish`.
-- Loaded with dofile from the script's own folder (see run.lua), so it works from any cwd.
local M = {}

-- Set up the plugin; `name` goes in the "all checks passed" line.
-- Returns the test directory (GPO_TEST_DIR), check(condition, message) and finish().
function M.start(name)
  local here = vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h')
  vim.opt.runtimepath:prepend(vim.fn.fnamemodify(here, ':h'))
  vim.cmd('filetype on')
  vim.cmd('runtime! plugin/gpo.lua')

  local dir = assert(os.getenv('GPO_TEST_DIR'), 'GPO_TEST_DIR')
  local failures = {}
  local function check(condition, message)
    if not condition then
      table.insert(failures, message)
    end
    return condition
  end
  -- Quit nvim: exit code 1 and the failures on stderr, or 0 when every check passed.
  local function finish()
    if #failures > 0 then
      io.stderr:write('FAILED:\n  ' .. table.concat(failures, '\n  ') .. '\n')
      vim.cmd('cquit 1')
    else
      io.stderr:write(name .. ': all checks passed\n')
      vim.cmd('qall!')
    end
  end
  return dir, check, finish
end

return M
