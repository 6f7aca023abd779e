-- Headless check: with no `gpo` in $VIRTUAL_ENV/bin or on PATH and no cmd, opening a
-- prompt starts no client and says how to install the server from a clone.
-- Run (tests/test_nvim_plugin.py does): GPO_TEST_DIR=... PATH=<no gpo> nvim --headless
--   -u NONE -i NONE -n -c 'luafile editors/nvim/tests/missing.lua'
local here = vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h')
local helpers = dofile(here .. '/helpers.lua')
local dir, check, finish = helpers.start('missing gpo')
local gpo = require('gpo')

local notes = {}
vim.notify = function(message, level)
  table.insert(notes, { message = message, level = level })
end
vim.cmd('edit ' .. dir .. '/x.prompt')
local said
check(vim.wait(5000, function()
  said = notes[1]
  return said ~= nil
end, 50), 'a message about the missing server')
if said then
  check(said.level == vim.log.levels.ERROR, 'an error')
  check(said.message:find('pip install /path/to/gpo', 1, true) ~= nil, 'message: ' .. said.message)
  check(said.message:find('gpo-lsp', 1, true) == nil, 'no uninstallable package name')
end
vim.wait(300)
check(next(gpo.roots()) == nil and next(helpers.attached(0)) == nil, 'no client')
finish()
