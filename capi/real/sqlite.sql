-- The sqlite3 CLI's workload for capi/real/run: run once under glibc's malloc
-- and once with a malloc library preloaded, on an in-memory database and on a file database;
-- the outputs (and the file databases) must be identical. Deterministic: no random(), no time.
.bail on
.headers on
.mode list
.timer off
pragma page_size = 4096;
pragma cache_size = 200;

-- Tables filled by recursive CTEs: 5,000 customers, 60,000 orders, 800 products.
create table customer(id integer primary key, name text not null, city text not null, since integer);
create table product(id integer primary key, label text not null, price real not null);
create table orders(id integer primary key, customer integer not null references customer(id),
                    product integer not null references product(id), qty integer not null,
                    note text);

begin;
with recursive n(i) as (select 1 union all select i + 1 from n where i < 5000)
insert into customer
select i, printf('customer-%05d', i),
       (case i % 9 when 0 then 'Oslo' when 1 then 'Lima' when 2 then 'Pune' when 3 then 'Kyiv'
        when 4 then 'Quito' when 5 then 'Accra' when 6 then 'Perth' when 7 then 'Bern'
        else 'Hanoi' end),
       2000 + (i * 7919) % 25
from n;
with recursive n(i) as (select 1 union all select i + 1 from n where i < 800)
insert into product select i, printf('product-%03d-%s', i, substr('abcdefghijklmnopqrstuvwxyz', 1 + i % 26, 1 + i % 13)),
       round(((i * 2654435761) % 100000) / 100.0 + 0.5, 2) from n;
with recursive n(i) as (select 1 union all select i + 1 from n where i < 60000)
insert into orders select i, 1 + (i * 48271) % 5000, 1 + (i * 16807) % 800, 1 + (i * 31) % 17,
       case when i % 11 = 0 then replace(hex(zeroblob(i % 200)), '00', 'ab') else null end
from n;
commit;

create index orders_customer on orders(customer);
create index orders_product on orders(product, qty);
create index customer_city on customer(city, name);

select 'counts', (select count(*) from customer), (select count(*) from product),
       (select count(*) from orders), (select sum(length(note)) from orders);

-- Joins and aggregates.
select c.city, count(distinct c.id) as customers, count(o.id) as orders, sum(o.qty) as items,
       round(sum(o.qty * p.price), 2) as revenue
from customer c join orders o on o.customer = c.id join product p on p.id = o.product
group by c.city order by c.city;

select c.name, sum(o.qty * p.price) as spent
from customer c join orders o on o.customer = c.id join product p on p.id = o.product
group by c.id order by spent desc, c.name limit 10;

select p.label, count(o.id) as n, sum(o.qty) as items, max(o.qty)
from product p left join orders o on o.product = p.id
group by p.id having items >= 600 order by items desc, p.label limit 10;

select c.since, count(*), min(c.name), max(c.name) from customer c
where c.id in (select customer from orders where qty > 15) group by c.since order by c.since;

-- A window function and a string aggregate over a join.
select city, name, rank from (
  select c.city, c.name, rank() over (partition by c.city order by count(o.id) desc, c.name) as rank
  from customer c join orders o on o.customer = c.id group by c.id)
where rank <= 2 order by city, rank;
select group_concat(label, ',') from (select label from product where id % 97 = 0 order by id);

-- Deletes, updates and a vacuum; the same queries afterwards.
delete from orders where qty % 4 = 0;
update customer set name = upper(name) where id % 13 = 0;
update orders set note = null where id % 3 = 0;
delete from product where id not in (select product from orders);
vacuum;
select 'after vacuum', (select count(*) from customer), (select count(*) from product),
       (select count(*) from orders), (select sum(length(note)) from orders),
       (select sum(qty) from orders);
select c.city, count(o.id), sum(o.qty) from customer c join orders o on o.customer = c.id
group by c.city order by c.city;
reindex;
pragma integrity_check;
pragma foreign_key_check;
select 'last', max(id), min(id) from orders;
