-- Headless check of the README's Neovim snippet, loaded as the init file, against
-- tests/nvim_fake_server.py installed as `$VIRTUAL_ENV/bin/gpo`: the prompt given on
-- the command line gets one gpo client with the snippet's settings and on_attach.
-- Run (tests/test_nvim_plugin.py does): GPO_TEST_DIR=... VIRTUAL_ENV=... nvim --headless
--   --cmd "lua dofile('editors/nvim/tests/helpers.lua').watch_deprecations()"
--   -u snippet.lua -i NONE -n x.prompt -c 'luafile editors/nvim/tests/readme.lua'
local here = vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h')
local helpers = dofile(here .. '/helpers.lua')
local check, finish = helpers.checker('README snippet')
local json_decode = (vim.json and vim.json.decode) or vim.fn.json_decode
local gpo = require('gpo')

local buf = vim.api.nvim_get_current_buf()
check(vim.bo[buf].filetype == 'dotprompt', 'filetype: ' .. vim.bo[buf].filetype)
local client
check(vim.wait(15000, function()
  client = gpo.client_for(buf)
  return client ~= nil and helpers.attached(buf)[client.id] ~= nil
    and #vim.diagnostic.get(buf) > 0
end, 50), 'gpo attached to the prompt and answered')
if client then
  check(client.name == 'gpo', 'client name ' .. client.name)
  local root = client.config.root_dir
  check(root == os.getenv('GPO_TEST_DIR'), 'root: ' .. tostring(root))
  local report = json_decode(vim.diagnostic.get(buf)[1].message)
  local task = ((gpo.options.settings or {}).models or {}).task
  check(task ~= nil and report.init.models.task == task, 'the snippet\'s settings were sent')
end
local mapped = false
for _, map in ipairs(vim.api.nvim_buf_get_keymap(buf, 'n')) do
  if (map.rhs or ''):find('GpoApply', 1, true) then
    mapped = true
  end
end
check(mapped, 'the snippet\'s on_attach mapped :GpoApply')
finish()
